"""One carrier's behaviour, as a pure function of a submit and the time.

``Endpoint.submit(item, now, wall_ms)`` decides everything about one submitted message
at once: the result (accepted, or rejected with a code) and when it is due, and, for an
accepted message, whether it reaches the handset, the report's code and when the report
is due, or that the report is lost. No I/O and no clock of its own: the host passes the
time in, so tests drive it with a fake clock. The host does the waiting and publishing.
The idempotency memory can be restored from a journal (``restore_accepted``), so that a
restarted carrier still answers an id it accepted before as a duplicate.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from carriers.ledger import CarrierLedger
from carriers.simulation import CarrierTruth
from router.contracts import interconnect
from router.contracts.codes import Code
from router.contracts.network_file import CarrierSpec

# How undelivered messages fail (weights), CPaaS codes.
UNDELIVERED_CODES = (
    Code.UNREACHABLE_HANDSET,
    Code.UNKNOWN_HANDSET,
    Code.LANDLINE_OR_UNREACHABLE_CARRIER,
    Code.FILTERED,
)
UNDELIVERED_WEIGHTS = (0.45, 0.25, 0.18, 0.12)
SUBMIT_LATENCY_SIGMA = 0.3
# Idempotency memory per carrier: the oldest ids are forgotten past this many.
MAX_REMEMBERED_IDS = 1_000_000


def mask_number(number: str) -> str:
    """A phone number fit for logs: country code and last two digits only."""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 6) + number[-2:]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` in the bucket; the caller gives the time."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.updated = now

    def take(self, now: float) -> bool:
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def set_rate(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = min(self.tokens, self.burst)


@dataclass(slots=True)
class Overrides:
    """What a fault scenario has changed; the defaults mean 'as generated'."""

    offline: bool = False
    latency_factor: float = 1.0
    delivery_factor: float = 1.0
    report_loss: float | None = None
    throughput_mps: float | None = None
    price_factor: float = 1.0


@dataclass(slots=True)
class Outcome:
    """What becomes of one submit item: a result, and perhaps a report, each with a due time."""

    result: interconnect.SubmitResult
    result_at: float
    report: interconnect.DeliveryReport | None = None
    report_at: float = 0.0


class Endpoint:
    """One carrier: deck, truth, token bucket, idempotency memory, overrides, ledger."""

    def __init__(
        self,
        spec: CarrierSpec,
        truth: CarrierTruth,
        prices: dict[str, float],
        ledger: CarrierLedger,
        now: float,
    ) -> None:
        self.spec = spec
        self.truth = truth
        self.prices = prices
        self.ledger = ledger
        self.overrides = Overrides()
        self.rng = random.Random(truth.seed)
        self.bucket = TokenBucket(truth.throughput_mps, truth.throughput_mps * truth.burst_s, now)
        self._max_prefix = max((len(p) for p in prices), default=0)
        # message id -> (billed price per segment, when its first result is due)
        self._accepted: dict[str, tuple[float, float]] = {}

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def offline(self) -> bool:
        return self.overrides.offline

    def set_throughput(self, mps: float | None) -> None:
        rate = self.truth.throughput_mps if mps is None else mps
        self.overrides.throughput_mps = mps
        self.bucket.set_rate(rate, rate * self.truth.burst_s)

    def price_for(self, digits: str) -> float | None:
        """Deck price of the longest matching prefix, or None when no prefix matches."""
        for n in range(min(len(digits), self._max_prefix), 0, -1):
            price = self.prices.get(digits[:n])
            if price is not None:
                return price
        return None

    def _delivery(self, digits: str) -> tuple[float, float]:
        """(true delivery probability, latency factor) towards this destination."""
        for n in (1, 2, 3):
            dest = self.truth.destinations.get(digits[:n])
            if dest is not None:
                return dest.delivery_probability, dest.latency_factor
        return self.truth.delivery_probability, 1.0

    def _reject(self, item: interconnect.SubmitItem, code: int, at: float) -> Outcome:
        self.ledger.reject(interconnect.REJECT_REASONS[code])
        result = interconnect.SubmitResult(
            id=item.id,
            carrier=self.spec.id,
            accepted=False,
            attempt=item.attempt,
            code=code,
            ask=item.ask,
        )
        return Outcome(result, at)

    def submit(self, item: interconnect.SubmitItem, now: float, wall_ms: int) -> Outcome | None:
        """Decide one submit item; None when offline (no answer at all)."""
        ledger = self.ledger
        ledger.submits += 1
        if self.overrides.offline:
            ledger.ignored_offline += 1
            return None
        rng = self.rng
        o = self.overrides
        result_at = now + (
            self.truth.submit_latency_ms
            * o.latency_factor
            * math.exp(rng.gauss(0.0, SUBMIT_LATENCY_SIGMA))
            / 1000.0
        )
        first = self._accepted.get(item.id)
        if first is not None:
            ledger.repeats += 1
            result = interconnect.SubmitResult(
                id=item.id,
                carrier=self.spec.id,
                accepted=True,
                attempt=item.attempt,
                duplicate=True,
                price=first[0],
                ask=item.ask,
            )
            # never answer a repeat before the original
            return Outcome(result, max(result_at, first[1]))
        to = item.to
        digits = to[1:]
        if not (to.startswith("+") and 6 <= len(digits) <= 15 and digits.isdigit()):
            return self._reject(item, Code.INVALID_DESTINATION, result_at)
        price = self.price_for(digits)
        if price is None:
            return self._reject(item, Code.NO_ROUTE, result_at)
        if not self.bucket.take(now):
            return self._reject(item, Code.QUEUE_OVERFLOW, result_at)
        if rng.random() < self.truth.submit_failure_rate:
            return self._reject(item, Code.UNKNOWN_ERROR, result_at)

        billed = round(price * o.price_factor, 6)
        self._remember(item.id, billed, result_at)
        ledger.accepted += 1
        result = interconnect.SubmitResult(
            id=item.id,
            carrier=self.spec.id,
            accepted=True,
            attempt=item.attempt,
            price=billed,
            ask=item.ask,
        )

        probability, latency_factor = self._delivery(digits)
        if rng.random() < probability * o.delivery_factor:
            ledger.delivered += 1
            status: interconnect.ReportStatus = "delivered"
            code: int | None = None
        else:
            ledger.undelivered += 1
            status = "undelivered"
            code = rng.choices(UNDELIVERED_CODES, UNDELIVERED_WEIGHTS)[0]
        loss = self.truth.report_loss_rate if o.report_loss is None else o.report_loss
        if rng.random() < loss:
            ledger.reports_lost += 1
            return Outcome(result, result_at)
        delay_s = (
            self.truth.report_delay_ms
            * latency_factor
            * o.latency_factor
            * math.exp(rng.gauss(0.0, self.truth.report_delay_sigma))
            / 1000.0
        )
        report_at = result_at + delay_s
        report = interconnect.DeliveryReport(
            id=item.id,
            carrier=self.spec.id,
            route=self.spec.kind,
            status=status,
            code=code,
            ts=wall_ms + round((report_at - now) * 1000),
            account=item.account,
            price=billed,
            segments=item.segments,
            attempt=item.attempt,
            encoding=item.encoding,
            country=item.country,
            submitted_ts=item.ts,
            sender=item.sender,
            quote=item.price,
            token=item.token,
        )
        return Outcome(result, result_at, report, report_at)

    def restore_accepted(self, message_id: str, billed: float, result_at: float) -> None:
        """Remember a message an earlier run of this carrier accepted (from its journal):
        a repeat is then a duplicate, billed ``billed``, answered no earlier than
        ``result_at``. Not counted in this run's ledger."""
        self._remember(message_id, billed, result_at)

    def _remember(self, message_id: str, billed: float, result_at: float) -> None:
        accepted = self._accepted
        accepted[message_id] = (billed, result_at)
        if len(accepted) > MAX_REMEMBERED_IDS:
            del accepted[next(iter(accepted))]
