"""The routing core's value types: what the table, the policy, health and the router share.

A leaf module: it imports nothing from the core, so every other core module can import it
without a cycle. Everything here is immutable plain data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

OTP: Final = 0
TRANSACTIONAL: Final = 1
MARKETING: Final = 2
CLASSES: Final = ("otp", "transactional", "marketing")
"""Message classes; the core indexes them by position (``OTP`` ... ``MARKETING``)."""
CLASS_INDEX: Final = {name: i for i, name in enumerate(CLASSES)}


@dataclass(frozen=True, slots=True)
class Carrier:
    """A carrier as the routing core sees it (advertised figures are health priors)."""

    id: str
    name: str
    kind: str  # "direct" or "aggregator"
    latency_s: float
    delivery_rate: float
    throughput_mps: float


class Quote(NamedTuple):
    """A carrier's rate for a destination: its own longest matching deck prefix."""

    carrier: str
    price: float  # USD per segment
    prefix: str
    destination: str


class Route(NamedTuple):
    """One ranked candidate. The hot path unpacks it as a plain tuple."""

    carrier: str
    price: float  # USD per segment
    interval: float  # token bucket: seconds per token (1 / throughput)
    tau: float  # token bucket: burst tolerance in seconds
    score: float  # the policy's figure of merit (lower ranks first)
    reliability: float  # expected delivery rate the policy used
    latency_s: float  # expected latency the policy used
    prefix: str  # the carrier's deck prefix that priced it
    kind: str


Estimate = Callable[[Carrier, str], tuple[float, float]]
"""(carrier, ISO region) -> (expected delivery rate, expected latency in seconds), as
``Health.estimate`` answers it."""

BucketParams = Callable[[Carrier], tuple[float, float]]
"""carrier -> (token interval, burst tolerance), see ``throttle.bucket_params``."""
