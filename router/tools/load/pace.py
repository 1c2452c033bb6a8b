"""Rate control as a pure schedule: message k (from 0) is due at ``start + k / rate``.

The shell asks ``take(now)`` how many messages are due and sends them as one batch, then
sleeps ``wait(now)``: until a time slice after the last batch, so that batches are a few
milliseconds of traffic rather than one message, or until the next message is due.
A shell that falls behind (a slow broker, a busy machine) gets the backlog in batches of
at most ``max_batch`` without sleeping, so the rate over the run stays right; it never
runs ahead. No clock is read here: tests drive it with a fake one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_SLICE_S = 0.005
DEFAULT_MAX_BATCH = 2000


@dataclass(slots=True)
class Pacer:
    rate: float  # messages per second, > 0
    total: int  # messages in the run, >= 0
    slice_s: float = DEFAULT_SLICE_S
    max_batch: int = DEFAULT_MAX_BATCH
    start: float | None = None  # clock reading when the first message was due
    sent: int = field(default=0)
    last_take: float = field(default=-math.inf)

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of messages per second: {self.rate}")
        if self.total < 0:
            raise ValueError(f"total must be >= 0: {self.total}")
        if self.slice_s <= 0 or self.max_batch < 1:
            raise ValueError("slice_s must be > 0 and max_batch >= 1")

    @classmethod
    def for_duration(
        cls,
        rate: float,
        duration_s: float,
        slice_s: float = DEFAULT_SLICE_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> Pacer:
        """A run of ``duration_s`` seconds at ``rate``: ``round(rate * duration_s)`` messages."""
        if duration_s <= 0:
            raise ValueError(f"duration must be > 0 seconds: {duration_s}")
        return cls(rate, round(rate * duration_s), slice_s, max_batch)

    @property
    def done(self) -> bool:
        return self.sent >= self.total

    def due(self, now: float) -> int:
        """Messages that should have been sent by ``now`` (all of them once the run is over)."""
        if self.start is None:
            return 0
        elapsed = now - self.start
        if elapsed < 0:
            return 0
        return min(self.total, math.floor(elapsed * self.rate + 1e-9) + 1)

    def take(self, now: float) -> int:
        """How many to send now (at most ``max_batch``); counts them as sent."""
        if self.start is None:
            self.start = now
        self.last_take = now
        n = min(self.due(now) - self.sent, self.max_batch)
        if n <= 0:
            return 0
        self.sent += n
        return n

    def wait(self, now: float) -> float:
        """Seconds to sleep before the next ``take``: none while a slice's worth or more is
        overdue; else until the next message is due, but at least a slice after the
        last ``take`` (so that a small backlog waits to become a batch)."""
        if self.done or self.start is None:
            return 0.0
        backlog = self.due(now) - self.sent
        if backlog >= min(self.max_batch, max(1.0, self.rate * self.slice_s)):
            return 0.0
        next_due = self.start + self.sent / self.rate
        return max(0.0, max(self.last_take + self.slice_s, next_due) - now)

    def planned_seconds(self) -> float:
        """How long the run takes at exactly ``rate`` (the last message is due then)."""
        return max(0, self.total - 1) / self.rate
