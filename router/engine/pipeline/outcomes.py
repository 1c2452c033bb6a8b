"""How a message ends: its ``sent`` or ``failed`` receipt (and the attempt's outcome in the
attempts log), the same answer again for a repeat of a known id, or a dead letter for a
record that cannot be decoded or met a bug. Once Kafka has the outcome, the request's
offset (and those of the repeats that waited for it) is done.
"""

from __future__ import annotations

import msgspec
import structlog

from router.contracts import wire
from router.contracts.codes import Scope, meaning
from router.engine import attempts
from router.engine.attempts import AttemptRecord, Known
from router.engine.pipeline.message import Done, Message
from router.engine.pipeline.state import State

log = structlog.get_logger("router.engine.pipeline")


def dead_letter_reason(error: Exception) -> str:
    """A bounded label for the metric; the full text goes into the record's header."""
    if isinstance(error, UnicodeDecodeError):
        return "bad_utf8"
    text = str(error)
    if "missing required field" in text:
        return "missing_field"
    if isinstance(error, msgspec.ValidationError):
        return "invalid_field"
    if "UTF-8" in text or "utf-8" in text:
        return "bad_utf8"
    if isinstance(error, RecursionError) or "nested" in text.lower():
        return "too_deep"
    return "not_json"


class Outcomes(State):
    def sent(self, m: Message, price_per_segment: float) -> None:
        if m.written:
            return
        d, route = m.decision, m.route
        assert d is not None
        assert route is not None
        price = price_per_segment * d.segments
        kind = route.kind
        self.metrics.child(self.metrics.cost_usd, kind).inc(price)
        r = m.request
        receipt = wire.Receipt(
            id=r.id,
            status="sent",
            ts=self.wall_ms(),
            account=r.account,
            sender=r.sender,
            carrier=route.carrier,
            route="direct" if kind == "direct" else "aggregator",
            attempt=m.attempt,
            segments=d.segments,
            encoding=d.encoding,
            price=price,
            failovers=m.failovers,
            submitted_ts=m.first_submit_ms or None,
        )
        outcome = AttemptRecord(
            id=r.id,
            state=attempts.SENT,
            carrier=route.carrier,
            attempt=m.attempt,
            kind=kind,
            price=price_per_segment,
            tried=tuple(m.tried),
            segments=d.segments,
            encoding=d.encoding,
            ts=receipt.ts,
        )
        self._outcome(m, receipt, outcome)

    def fail(self, m: Message, code: int, reason: str | None = None) -> None:
        if m.written:
            return
        r, d = m.request, m.decision
        receipt = wire.Receipt(
            id=r.id,
            status="failed",
            ts=self.wall_ms(),
            account=r.account,
            sender=r.sender,
            error_code=code,
            error_message=wire.quote(reason or meaning(Scope.FAILED, code)),
            carrier=m.route.carrier if m.route else None,
            attempt=m.attempt,
            segments=d.segments if d else 0,
            encoding=d.encoding if d and d.segments else None,
            failovers=m.failovers,
        )
        outcome = AttemptRecord(
            id=r.id,
            state=attempts.FAILED,
            carrier=m.route.carrier if m.route else "",
            attempt=m.attempt,
            tried=tuple(m.tried),
            code=code,
            ts=receipt.ts,
        )
        self._outcome(m, receipt, outcome)

    def _close(self, m: Message) -> None:
        """``m``'s outcome is handed to the sink now: nothing more is done for it."""
        m.written = True
        if self.active.get(m.request.id) is m:
            del self.active[m.request.id]

    def _completion(self, m: Message, receipt: wire.Receipt | None) -> Done:
        """What runs once ``m``'s outcome is durable: its receipt counted (if any), its
        offset done, and those of the repeats that waited for it."""
        counter = (
            None
            if receipt is None
            else self.metrics.child(
                self.metrics.receipts, receipt.status, str(receipt.error_code or "")
            )
        )
        done, followers = m.done, m.followers

        def durable() -> None:
            if counter is not None:
                counter.inc()
            done()
            for follower in followers:
                follower()

        return durable

    def _outcome(self, m: Message, receipt: wire.Receipt, outcome: AttemptRecord) -> None:
        self._close(m)
        if m.known is not None:
            m.known.apply(outcome)
        if m.attempt:
            # Only messages that reached a carrier need their outcome in the log: a
            # refusal before any attempt is decided the same way when read again.
            self.sink.attempt(outcome, m.partition_no, None)
        self.sink.receipt(receipt, self._completion(m, receipt))

    def _answer_sent(self, m: Message, k: Known) -> None:
        """A repeated id that was sent: the same ``sent`` receipt again, no submit."""
        r = m.request
        receipt = wire.Receipt(
            id=r.id,
            status="sent",
            ts=self.wall_ms(),
            account=r.account,
            sender=r.sender,
            carrier=k.carrier,
            route="direct" if k.kind == "direct" else "aggregator",
            attempt=k.attempt,
            segments=k.segments,
            encoding=k.encoding or None,
            price=k.price * k.segments,
        )
        self._answer(m, receipt)

    def _answer_failed(self, m: Message, k: Known) -> None:
        r = m.request
        receipt = wire.Receipt(
            id=r.id,
            status="failed",
            ts=self.wall_ms(),
            account=r.account,
            sender=r.sender,
            error_code=k.code,
            error_message=meaning(Scope.FAILED, k.code),
            carrier=k.carrier or None,
            attempt=k.attempt,
        )
        self._answer(m, receipt)

    def _answer(self, m: Message, receipt: wire.Receipt) -> None:
        m.written = True
        self.sink.receipt(receipt, self._completion(m, receipt))

    def _duplicate(self, outcome: str) -> None:
        self.metrics.child(self.metrics.duplicate_requests, outcome).inc()

    # -- errors ------------------------------------------------------------------------

    def _dead_letter(
        self,
        reason: str,
        detail: str,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition_no: int,
        offset: int,
        done: Done,
        error_class: str | None = None,
    ) -> None:
        self.metrics.child(self.metrics.dead_lettered, reason).inc()
        headers = [
            (wire.DLQ_REASON, f"{reason}: {wire.quote(detail)}".encode()),
            (wire.DLQ_TOPIC, topic.encode()),
            (wire.DLQ_PARTITION, str(partition_no).encode()),
            (wire.DLQ_OFFSET, str(offset).encode()),
        ]
        if error_class is not None:
            headers.append((wire.DLQ_ERROR, error_class.encode()))
        self.sink.dead_letter(value, key, headers, done)

    def _internal(self, m: Message, error: Exception) -> None:
        """A bug met by one message: it goes to the dead-letter topic (unless its outcome
        was written already), the error to the log; the worker goes on."""
        self.metrics.internal_errors.inc()
        log.error("internal error handling a request", id=wire.quote(m.request.id, 64),
                  error=repr(error)[:300], exc_info=error)  # fmt: skip
        if m.written:
            return
        self._close(m)
        self._dead_letter("internal", repr(error), m.raw, m.raw_key, m.topic, m.partition_no,
                          m.offset, self._completion(m, None), type(error).__name__)  # fmt: skip
