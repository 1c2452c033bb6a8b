"""Capped exponential backoff with jitter: one implementation for every reconnect and
restart loop (the carrier transport, the carriers' MQTT sessions, the worker fleet).

Hand-written rather than taken from a retry library (tenacity, backoff): those wrap a
call in a decorator, while these loops keep their own state across reconnects and only
need the next delay.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays ``initial`` doubling up to ``cap``, each drawn uniformly from the upper half
    of its step, so that many clients do not retry in step. ``reset`` after a success."""

    def __init__(
        self,
        initial: float,
        cap: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial} and {cap}")
        self.initial = initial
        self.cap = cap
        self._rng = rng
        self._attempt = 0

    @property
    def failures(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 64)
        return ceiling * (0.5 + 0.5 * self._rng())

    def reset(self) -> None:
        self._attempt = 0
