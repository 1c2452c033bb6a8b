"""Ranking policy per message class: expected cost per delivered message, plus the
price of waiting and of failing, weighted by class.

For a carrier with price ``p`` (USD per segment), expected delivery rate ``r`` and
expected latency ``t`` (seconds) toward the destination country::

    score = p / max(r, R_MIN) + W_latency[class] * t + W_failure[class] * (1 - r)

Lower is better. ``p / r`` is the expected spend per *delivered* segment (failed sends
are paid for too). ``W_latency`` (USD per second) and ``W_failure`` (USD per failed
message) price what a slow or lost message costs the sender: an OTP that arrives late
or not at all is worth little, a marketing message mostly costs its price. Ties break on
price, then carrier id, so the order is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

from router.core.table import Carrier, Quote

OTP: Final = 0
TRANSACTIONAL: Final = 1
MARKETING: Final = 2
CLASSES: Final = ("otp", "transactional", "marketing")
CLASS_INDEX: Final = {name: i for i, name in enumerate(CLASSES)}

R_MIN: Final = 0.01  # floor on the delivery rate so a failing carrier scores finitely


class Weights(NamedTuple):
    latency: float  # USD per second of expected latency
    failure: float  # USD per undelivered message


WEIGHTS: Final = (
    Weights(latency=0.0025, failure=0.05),  # otp: speed and reliability first
    Weights(latency=0.0005, failure=0.01),  # transactional: balanced
    Weights(latency=0.0, failure=0.0),  # marketing: expected cost per delivered message
)


class Route(NamedTuple):
    """One ranked candidate. The hot path unpacks it as a plain tuple."""

    carrier: str
    price: float  # USD per segment
    interval: float  # token bucket: seconds per token (1 / throughput)
    tau: float  # token bucket: burst tolerance in seconds
    score: float
    reliability: float  # expected delivery rate used for the score
    latency_s: float  # expected latency used for the score
    prefix: str  # the carrier's deck prefix that priced it
    kind: str


def score(price: float, reliability: float, latency_s: float, cls: int) -> float:
    w = WEIGHTS[cls]
    r = reliability if reliability > R_MIN else R_MIN
    return price / r + w.latency * latency_s + w.failure * (1.0 - reliability)


Estimate = Callable[[Carrier], tuple[float, float]]
"""carrier -> (expected delivery rate, expected latency in seconds)."""

BucketParams = Callable[[Carrier], tuple[float, float]]
"""carrier -> (token interval, burst tolerance), see ``throttle``."""


def rank(
    quotes: Iterable[Quote],
    carriers: dict[str, Carrier],
    cls: int,
    estimate: Estimate,
    bucket: BucketParams,
) -> tuple[Route, ...]:
    """Every quote as a Route, best first, for message class ``cls``."""
    new = tuple.__new__  # C-level construction: a NamedTuple's own __new__ is Python code
    routes = []
    for carrier, price, prefix, _ in quotes:
        c = carriers[carrier]
        rate, latency = estimate(c)
        interval, tau = bucket(c)
        s = score(price, rate, latency, cls)
        routes.append(new(Route, (carrier, price, interval, tau, s, rate, latency, prefix, c.kind)))
    routes.sort(key=_order)
    return tuple(routes)


def _order(r: Route) -> tuple[float, float, str]:
    return (r[4], r[1], r[0])  # score, price, carrier
