"""Live carrier health: moving averages from delivery reports, and circuit breakers.

- Per (carrier, destination country): exponentially weighted moving averages of the
  delivery rate and of the delivery latency, starting from the carrier's advertised
  figures. Rankings read the *published* value of each average, not the live one.
  ``tick`` (due every ``refresh_s``) publishes the averages that moved by a material step
  (``rate_step`` in delivery rate, ``latency_step`` relative latency) and returns their
  countries; the router then invalidates the cached rankings of those countries' table
  entries only. ``tick`` is the only thing that changes what ``estimate`` returns, so the
  countries it returns are all a ranking cache must drop: whoever caches rankings calls
  ``tick`` (``Router.tick`` does, from ``Router.decide`` once ``deadline`` has passed).
  Rankings are recomputed lazily, per entry and class, by the next message that needs
  one: health reaches the ranking within ``refresh_s``, noise does not churn the caches,
  and no message pays for more than its own entry's re-rank.
- Per carrier: a circuit breaker. ``failure_threshold`` consecutive submit failures or
  timeouts, a carrier-wide delivery rate collapsing below ``collapse_rate``, or an
  ``offline`` status open it. After ``cooldown_s`` (doubling on each failed probe, up to
  ``max_cooldown_s``) it goes half-open and lets one probe message through; the probe's
  success closes it, its failure opens it again. An offline carrier stays open until it
  reports ``online``, then it is half-open. Breakers take effect at once without touching
  the cached rankings: rankings keep every carrier, and the router skips the carriers in
  ``unavailable`` when it chooses.

Time is always a parameter: monotonic seconds as a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from router.core.types import Carrier


class Breaker(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"  # one probe may go
    PROBING = "probing"  # half-open, the probe is out: wait for its outcome


@dataclass(slots=True)
class HealthConfig:
    alpha: float = 0.02  # EWMA weight of one report
    refresh_s: float = 5.0  # health reaches the ranking within this time
    failure_threshold: int = 5  # consecutive submit failures or timeouts that open
    cooldown_s: float = 10.0
    max_cooldown_s: float = 300.0
    collapse_rate: float = 0.2  # carrier-wide delivery rate that opens the breaker ...
    collapse_min_reports: int = 50  # ... once this many reports have been seen
    rate_step: float = 0.02  # publish a delivery rate that moved this much (absolute) ...
    latency_step: float = 0.10  # ... or a latency that moved this much (relative)


@dataclass(slots=True)
class _Average:
    rate: float
    latency_s: float
    published_rate: float
    published_latency_s: float
    reports: int = 0


@dataclass(slots=True)
class _BreakerState:
    state: Breaker = Breaker.CLOSED
    failures: int = 0
    until: float = math.inf  # when an open breaker goes half-open
    cooldown_s: float = 0.0
    offline: bool = False
    reason: str = ""


class Health:
    """Health of every carrier. Mutated by the shell; read by the router."""

    __slots__ = (
        "_averages",
        "_breakers",
        "_carrier_avg",
        "_pending",
        "config",
        "deadline",
        "half_open",
        "unavailable",
    )

    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = config or HealthConfig()
        self.deadline = -math.inf  # tick() is due when now >= deadline
        self.half_open: set[str] = set()  # carriers whose breaker lets one probe through
        self.unavailable: set[str] = set()  # open or probing: skipped when choosing
        self._averages: dict[tuple[str, str], _Average] = {}
        self._carrier_avg: dict[str, _Average] = {}
        self._breakers: dict[str, _BreakerState] = {}
        self._pending: set[tuple[str, str]] = set()

    # -- reading ---------------------------------------------------------------------

    def estimate(self, carrier: Carrier, country: str) -> tuple[float, float]:
        """(expected delivery rate, expected latency in seconds) toward ``country``."""
        avg = self._averages.get((carrier.id, country))
        if avg is None:
            return carrier.delivery_rate, carrier.latency_s
        return avg.published_rate, avg.published_latency_s

    def live(self, carrier: Carrier, country: str) -> tuple[float, float]:
        """The moving averages as of the last report (possibly not yet published)."""
        avg = self._averages.get((carrier.id, country))
        if avg is None:
            return carrier.delivery_rate, carrier.latency_s
        return avg.rate, avg.latency_s

    def breaker(self, carrier: str) -> Breaker:
        b = self._breakers.get(carrier)
        return Breaker.CLOSED if b is None else b.state

    def breaker_reason(self, carrier: str) -> str:
        b = self._breakers.get(carrier)
        return "" if b is None else b.reason

    def reports(self, carrier: str, country: str) -> int:
        avg = self._averages.get((carrier, country))
        return 0 if avg is None else avg.reports

    # -- time --------------------------------------------------------------------------

    def tick(self, now: float) -> set[str]:
        """Publish moved averages and due breaker transitions; returns the countries
        whose published averages changed. Called when ``now >= deadline``."""
        c = self.config
        countries: set[str] = set()
        for key in self._pending:
            m = self._averages[key]
            if (
                abs(m.rate - m.published_rate) >= c.rate_step
                or abs(m.latency_s - m.published_latency_s)
                >= c.latency_step * m.published_latency_s
            ):
                m.published_rate, m.published_latency_s = m.rate, m.latency_s
                countries.add(key[1])
        self._pending.clear()
        next_due = now + c.refresh_s
        for cid, b in self._breakers.items():
            if b.state is Breaker.OPEN and not b.offline:
                if now >= b.until:
                    self._set(cid, b, Breaker.HALF_OPEN, b.reason)
                else:
                    next_due = min(next_due, b.until)
        self.deadline = next_due
        return countries

    # -- delivery reports ----------------------------------------------------------------

    def delivery(
        self,
        carrier: Carrier,
        country: str,
        delivered: bool,
        latency_s: float | None,
        now: float,
    ) -> None:
        """A delivery report: ``delivered`` or not, with the submit-to-report latency."""
        a = self.config.alpha
        key = (carrier.id, country)
        avg = self._averages.get(key)
        prior = (carrier.delivery_rate, carrier.latency_s)
        if avg is None:
            avg = self._averages[key] = _Average(*prior, *prior)
        whole = self._carrier_avg.get(carrier.id)
        if whole is None:
            whole = self._carrier_avg[carrier.id] = _Average(*prior, *prior)
        x = 1.0 if delivered else 0.0
        for m in (avg, whole):
            m.rate += a * (x - m.rate)
            if delivered and latency_s is not None:
                m.latency_s += a * (latency_s - m.latency_s)
            m.reports += 1
        self._pending.add(key)
        c = self.config
        if whole.reports >= c.collapse_min_reports and whole.rate < c.collapse_rate:
            b = self._state(carrier.id)
            if b.state is Breaker.CLOSED:
                self._open(carrier.id, b, f"delivery rate collapsed to {whole.rate:.0%}", now)

    # -- submits and status ----------------------------------------------------------------

    def submit_ok(self, carrier: str) -> None:
        b = self._breakers.get(carrier)
        if b is None:
            return
        b.failures = 0
        if b.state in (Breaker.HALF_OPEN, Breaker.PROBING) and not b.offline:
            b.cooldown_s = 0.0
            whole = self._carrier_avg.get(carrier)
            if whole is not None:  # a collapse must show again in fresh reports
                whole.reports = 0
            self._set(carrier, b, Breaker.CLOSED, "")

    def submit_failed(self, carrier: str, now: float, why: str = "submit failed") -> None:
        """A rejected submit or a timeout."""
        b = self._state(carrier)
        b.failures += 1
        if b.state in (Breaker.HALF_OPEN, Breaker.PROBING):
            self._open(carrier, b, f"probe failed: {why}", now)
        elif b.state is Breaker.CLOSED and b.failures >= self.config.failure_threshold:
            self._open(carrier, b, f"{b.failures} consecutive failures ({why})", now)

    def status(self, carrier: str, online: bool, now: float) -> None:
        """The carrier's retained status: ``online`` or ``offline`` (last will)."""
        b = self._state(carrier)
        if not online:
            b.offline = True
            self._open(carrier, b, "carrier offline", now)
        elif b.offline:
            b.offline = False
            self._set(carrier, b, Breaker.HALF_OPEN, "back online")

    def probe_taken(self, carrier: str) -> None:
        """The router sent the half-open breaker's one probe."""
        b = self._state(carrier)
        if b.state is Breaker.HALF_OPEN:
            self._set(carrier, b, Breaker.PROBING, b.reason)

    # -- internals ---------------------------------------------------------------------

    def _state(self, carrier: str) -> _BreakerState:
        b = self._breakers.get(carrier)
        if b is None:
            b = self._breakers[carrier] = _BreakerState()
        return b

    def _open(self, carrier: str, b: _BreakerState, reason: str, now: float) -> None:
        c = self.config
        b.cooldown_s = min(c.max_cooldown_s, b.cooldown_s * 2 if b.cooldown_s else c.cooldown_s)
        b.until = math.inf if b.offline else now + b.cooldown_s
        self._set(carrier, b, Breaker.OPEN, reason)
        self.deadline = min(self.deadline, b.until)

    def _set(self, carrier: str, b: _BreakerState, state: Breaker, reason: str) -> None:
        b.state = state
        b.reason = reason
        if state is not Breaker.CLOSED:
            b.failures = 0 if state is Breaker.HALF_OPEN else b.failures
        self.half_open.discard(carrier)
        self.unavailable.discard(carrier)
        if state is Breaker.HALF_OPEN:
            self.half_open.add(carrier)
        elif state in (Breaker.OPEN, Breaker.PROBING):
            self.unavailable.add(carrier)
