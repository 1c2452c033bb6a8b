"""A message's way through one worker, as a state machine driven by callbacks.

No task per message: the Kafka shell hands records in (``take``), the carrier link hands
submit results, delivery reports and statuses in (``on_results``, ``on_reports``,
``on_status``), and the shell's timers call ``expire_submits`` and ``retry_held``. The
pipeline answers with receipts and dead-letter records through a ``Sink``; when Kafka has
made a request's outcome durable, the sink calls back and the request's offset becomes
committable. Everything here is synchronous and runs on the event loop's thread.

A request's life: decode (undecodable -> dead letter) -> expired? (failed 30036) ->
routing decision (refused -> failed receipt with the decision's code; every affordable
carrier at its cap -> held until one has room, while intake pauses) -> submit to the
chosen carrier -> accepted (``sent``) | rejected or no answer in time (next fallback,
up to ``max_attempts``, else ``failed``). Later the carrier's delivery report, which
carries everything needed, becomes a ``delivered`` or ``undelivered`` receipt on
whichever worker receives it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final, Protocol

import msgspec
import structlog

from carriers import protocol
from router import wire
from router.logs import mask
from router.metrics import Metrics
from router.offsets import OffsetTracker
from router.routing import errors
from router.routing.decision import Decision, Router
from router.routing.policy import CLASS_INDEX, Route
from router.routing.table import Carrier

log = structlog.get_logger("router.pipeline")

EXPIRED: Final = 30036
"""The request's validity period passed before a carrier accepted it."""
SUBMIT_TIMEOUT: Final = 30008
"""The carrier did not answer the submit in time (counted as an unknown error)."""

CODES: Final[dict[int, str]] = {
    **errors.DESCRIPTIONS,
    EXPIRED: "validity period expired before a carrier accepted the message",
    protocol.UNKNOWN_DESTINATION: "no route for this destination",
    protocol.THROTTLED: "carrier throughput cap exceeded (queue overflow)",
    SUBMIT_TIMEOUT: "unknown error: the carrier failed the submit or did not answer in time",
    protocol.UNREACHABLE_HANDSET: "unreachable handset",
    protocol.UNKNOWN_HANDSET: "unknown handset",
    protocol.LANDLINE_OR_UNREACHABLE_CARRIER: "landline or unreachable carrier",
    protocol.FILTERED: "filtered by the carrier",
}

Done = Callable[[], None]


class Sink(Protocol):
    """Where outcomes go (Kafka in the worker). ``on_durable`` runs once Kafka has them."""

    def receipt(self, receipt: wire.Receipt, on_durable: Done | None) -> None: ...

    def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_durable: Done,
    ) -> None: ...


class Submitter(Protocol):
    def submit(self, carrier: str, item: protocol.SubmitItem) -> None: ...


class Message:
    """A request in flight on this worker."""

    __slots__ = (
        "attempt",
        "awaiting",
        "deadline_ms",
        "decision",
        "done",
        "failovers",
        "index",
        "request",
        "route",
        "submitted_at",
        "written",
    )

    def __init__(self, request: wire.SendRequest, done: Done) -> None:
        self.request = request
        self.done = done  # marks the Kafka offset finished; call once the outcome is durable
        self.decision: Decision | None = None
        self.index = -1  # index of the current route in decision.routes
        self.route: Route | None = None
        self.attempt = 0
        self.awaiting = 0  # the attempt whose submit result is awaited; 0 if none
        self.submitted_at = 0.0
        self.failovers: list[wire.FailedAttempt] = []
        self.written = False  # its outcome receipt has been handed to the sink
        r = request
        self.deadline_ms = (
            r.created_at + int(r.validity_s * 1000)
            if r.validity_s is not None and r.created_at is not None
            else None
        )


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
    return "not_json"


class Pipeline:
    def __init__(
        self,
        router: Router,
        carriers: dict[str, Carrier],
        link: Submitter,
        sink: Sink,
        tracker: OffsetTracker[Any],
        metrics: Metrics,
        *,
        submit_timeout_s: float,
        max_attempts: int,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.router = router
        self.carriers = carriers
        self.link = link
        self.sink = sink
        self.tracker = tracker
        self.metrics = metrics
        self.submit_timeout_s = submit_timeout_s
        self.max_attempts = max_attempts
        self.clock = clock
        self.wall_ms = wall_ms
        self.awaiting: dict[tuple[str, int], list[Message]] = {}
        self.timeouts: deque[tuple[float, Message, int]] = deque()
        self.held: deque[Message] = deque()
        self.decision_time = 0.0  # seconds spent in routing decisions since last read
        self.decisions = 0

    # -- intake ------------------------------------------------------------------------

    def take(
        self,
        partition: Hashable,
        topic: str,
        partition_no: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> None:
        """A record from the requests topic; ``partition`` is the tracker's key for its
        partition, ``partition_no`` its number in ``topic``. Never raises for bad input."""
        tracker = self.tracker
        tracker.add(partition, offset)
        self.metrics.consumed.inc()

        def done() -> None:
            tracker.done(partition, offset)

        def dead_letter(reason: str, detail: str) -> None:
            self.metrics.child(self.metrics.dead_lettered, reason).inc()
            headers = [
                (wire.DLQ_REASON, f"{reason}: {detail}".encode()),
                (wire.DLQ_TOPIC, topic.encode()),
                (wire.DLQ_PARTITION, str(partition_no).encode()),
                (wire.DLQ_OFFSET, str(offset).encode()),
            ]
            self.sink.dead_letter(value, key, headers, done)

        try:
            if value is None:
                raise msgspec.DecodeError("empty record (no value)")
            request = wire.decode_request(value)
        except (ValueError, RecursionError) as e:  # msgspec.DecodeError, UnicodeDecodeError
            dead_letter(dead_letter_reason(e), str(e))
            return
        m = Message(request, done)
        try:
            self.route(m, self.clock())
        except Exception as e:
            # A bug met by one request must not become a crash loop that re-reads it
            # forever: the request goes to the dead-letter topic, the error to the log.
            log.exception("internal error routing a request", id=request.id)
            if m.attempt == 0 and not m.written and m not in self.held:
                dead_letter("internal_error", repr(e))
            else:
                raise  # already submitted somewhere: let the worker restart and re-read

    def route(self, m: Message, now: float) -> None:
        r = m.request
        if m.deadline_ms is not None and self.wall_ms() > m.deadline_ms:
            self.fail(m, EXPIRED)
            return
        t0 = time.perf_counter()
        d = self.router.decide(r.to, r.body, CLASS_INDEX[r.cls], r.max_price, now)
        self.decision_time += time.perf_counter() - t0
        self.decisions += 1
        if d.code == 0:
            m.decision = d
            m.index = d.chosen
            self.submit(m, d.routes[d.chosen], now)
        elif d.code == errors.QUEUE_OVERFLOW:
            self.held.append(m)  # every affordable carrier is full: wait, intake pauses
        else:
            m.decision = d
            self.fail(m, d.code, d.reason)

    def retry_held(self) -> None:
        """Try the held requests again (the shell calls this while any are held)."""
        now = self.clock()
        for _ in range(len(self.held)):
            self.route(self.held.popleft(), now)

    # -- submits -----------------------------------------------------------------------

    def submit(self, m: Message, route: Route, now: float) -> None:
        d = m.decision
        assert d is not None
        r = m.request
        m.route = route
        m.attempt += 1
        m.awaiting = m.attempt
        m.submitted_at = now
        carrier = route.carrier
        self.link.submit(
            carrier,
            protocol.SubmitItem(
                id=r.id,
                carrier=carrier,
                to=r.to,
                account=r.account,
                segments=d.segments,
                price=route.price,
                attempt=m.attempt,
                encoding=d.encoding,
                country=d.country,
                ts=self.wall_ms(),
            ),
        )
        key = (r.id, m.attempt)
        waiting = self.awaiting.get(key)
        if waiting is None:
            self.awaiting[key] = [m]
        else:
            waiting.append(m)  # the same id twice in flight (a producer's duplicate)
        self.metrics.child(self.metrics.routed, carrier, route.kind).inc()

    def on_published(self, carrier: str, items: Sequence[protocol.SubmitItem]) -> None:
        """The broker took these submits: the carrier's answer is due within the timeout."""
        deadline = self.clock() + self.submit_timeout_s
        awaiting = self.awaiting
        timeouts = self.timeouts
        for item in items:
            waiting = awaiting.get((item.id, item.attempt))
            if waiting:
                for m in waiting:
                    timeouts.append((deadline, m, item.attempt))

    def on_results(self, carrier: str, results: Sequence[protocol.SubmitResult]) -> None:
        now = self.clock()
        health = self.router.health
        observe = self.metrics.submit_seconds.observe
        for res in results:
            key = (res.id, res.attempt)
            waiting = self.awaiting.get(key)
            if not waiting:
                continue  # answered after its timeout: that attempt has failed over already
            answered_by = res.carrier or carrier  # batches from a carrier process name each
            m = next((x for x in waiting if x.route and x.route.carrier == answered_by), None)
            if m is None:
                continue  # a duplicate's id at another carrier: not this carrier's submit
            waiting.remove(m)
            if not waiting:
                del self.awaiting[key]
            m.awaiting = 0
            observe(now - m.submitted_at)
            assert m.route is not None
            cid = m.route.carrier  # the carrier this attempt went to
            if res.accepted:
                health.submit_ok(cid)
                self.sent(m, res.price)
            else:
                code = res.code or SUBMIT_TIMEOUT
                if code != protocol.THROTTLED:
                    # A full carrier is busy, not broken: it spills over without counting
                    # towards its breaker.
                    health.submit_failed(cid, now, CODES.get(code, str(code)))
                self.failover(m, code, now)

    def expire_submits(self) -> None:
        """Fail over every submit whose result did not come in time (called by a timer)."""
        now = self.clock()
        timeouts = self.timeouts
        while timeouts and timeouts[0][0] <= now:
            _, m, attempt = timeouts.popleft()
            if m.awaiting != attempt:
                continue  # answered in time
            key = (m.request.id, attempt)
            waiting = self.awaiting.get(key)
            if waiting is not None:
                waiting.remove(m)
                if not waiting:
                    del self.awaiting[key]
            m.awaiting = 0
            assert m.route is not None
            self.router.health.submit_failed(m.route.carrier, now, "submit timeout")
            self.failover(m, SUBMIT_TIMEOUT, now)

    def failover(self, m: Message, code: int, now: float) -> None:
        d, route = m.decision, m.route
        assert d is not None
        assert route is not None
        m.failovers.append(wire.FailedAttempt(route.carrier, m.attempt, code))
        self.metrics.child(self.metrics.failovers, str(code)).inc()
        if m.deadline_ms is not None and self.wall_ms() > m.deadline_ms:
            self.fail(m, EXPIRED)
            return
        if m.attempt < self.max_attempts:
            i = self.router.next_route(d.routes, m.index, d.segments, d.max_price, now)
            if i >= 0:
                m.index = i
                r = d.routes[i]
                log.debug("failover", frm=route.carrier, to=r.carrier, code=code,
                          dest=mask(m.request.to))  # fmt: skip
                self.submit(m, r, now)
                return
        self.fail(m, code)

    # -- outcomes ----------------------------------------------------------------------

    def sent(self, m: Message, price_per_segment: float) -> None:
        d, route = m.decision, m.route
        assert d is not None
        assert route is not None
        price = price_per_segment * d.segments
        kind = route.kind
        self.metrics.child(self.metrics.cost_usd, kind).inc(price)
        self.metrics.child(self.metrics.receipts, "sent", "").inc()
        r = m.request
        receipt = wire.Receipt(
            id=r.id,
            status="sent",
            ts=self.wall_ms(),
            account=r.account,
            carrier=route.carrier,
            route="direct" if kind == "direct" else "aggregator",
            attempt=m.attempt,
            segments=d.segments,
            encoding=d.encoding,
            price=price,
            failovers=m.failovers,
        )
        m.written = True
        self.sink.receipt(receipt, m.done)

    def fail(self, m: Message, code: int, reason: str | None = None) -> None:
        self.metrics.child(self.metrics.receipts, "failed", str(code)).inc()
        r, d = m.request, m.decision
        receipt = wire.Receipt(
            id=r.id,
            status="failed",
            ts=self.wall_ms(),
            account=r.account,
            error_code=code,
            error_message=reason or CODES.get(code, "failed"),
            carrier=m.route.carrier if m.route else None,
            attempt=m.attempt,
            segments=d.segments if d else 0,
            encoding=d.encoding if d and d.segments else None,
            failovers=m.failovers,
        )
        m.written = True
        self.sink.receipt(receipt, m.done)

    # -- from carriers -----------------------------------------------------------------

    def on_reports(self, carrier: str, reports: Sequence[protocol.DeliveryReport]) -> None:
        now = self.clock()
        wall = self.wall_ms()
        health = self.router.health
        carriers = self.carriers
        for rep in reports:
            spec = carriers.get(rep.carrier)
            delivered = rep.status == "delivered"
            self.metrics.child(self.metrics.delivery_reports, rep.status).inc()
            code = "" if rep.code is None else str(rep.code)
            self.metrics.child(self.metrics.receipts, rep.status, code).inc()
            self.sink.receipt(
                wire.Receipt(
                    id=rep.id,
                    status=rep.status,
                    ts=wall,
                    account=rep.account,
                    error_code=rep.code,
                    error_message=CODES.get(rep.code) if rep.code is not None else None,
                    carrier=rep.carrier,
                    route=rep.route,
                    attempt=rep.attempt,
                    segments=rep.segments,
                    encoding=rep.encoding,
                    price=rep.price * rep.segments,
                    currency=rep.currency,
                ),
                None,
            )
            if spec is not None:
                latency = (rep.ts - rep.submitted_ts) / 1000.0 if rep.submitted_ts else None
                health.delivery(spec, rep.country, delivered, latency, now)

    def on_status(self, carrier: str, online: bool) -> None:
        if carrier not in self.carriers:
            return
        self.router.health.status(carrier, online, self.clock())
        (log.debug if online else log.warning)("carrier status", carrier=carrier, online=online)
