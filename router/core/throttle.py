"""Per-carrier throughput caps: a token bucket in its virtual-scheduling form (GCRA).

A bucket of ``burst`` tokens refilled at ``rate`` tokens per second is one float per
carrier, the theoretical arrival time ``tat``: a message at ``now`` conforms when
``max(tat, now) - now <= tau`` with ``tau = (burst - 1) / rate``, and then takes a token by
advancing ``tat`` by ``interval = 1 / rate``. Equivalent to the two-variable token
bucket, with one read and one write per check (the router inlines it on the hot path).
A full carrier spills the message over to the next candidate instead of queueing it.
"""

from __future__ import annotations

from typing import Final

from router.core.types import Carrier

BURST_SECONDS: Final = 1.0  # a bucket holds one second of the carrier's throughput
SLACK: Final = 1e-9  # absorbs float rounding in accumulated arrival times


def bucket_params(carrier: Carrier, burst_seconds: float = BURST_SECONDS) -> tuple[float, float]:
    """(interval, tau) of the carrier's bucket."""
    rate = carrier.throughput_mps
    burst = max(1.0, rate * burst_seconds)
    interval = 1.0 / rate
    return interval, (burst - 1.0) * interval + SLACK


class Throttle:
    """Every carrier's bucket state: carrier id -> theoretical arrival time (seconds)."""

    __slots__ = ("tat",)

    def __init__(self) -> None:
        self.tat: dict[str, float] = {}

    def take(self, carrier: str, interval: float, tau: float, now: float) -> bool:
        """Take a token if one is there; False means the carrier is at its cap."""
        tat = self.tat.get(carrier, now)
        if tat < now:
            tat = now
        if tat - now > tau:
            return False
        self.tat[carrier] = tat + interval
        return True

    def tokens(self, carrier: str, interval: float, tau: float, now: float) -> float:
        """Tokens available at ``now`` (for display)."""
        tat = max(self.tat.get(carrier, now), now)
        return max(0.0, (tau - (tat - now)) / interval + 1.0)
