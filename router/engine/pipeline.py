"""A message's way through one worker, as a state machine driven by callbacks.

No task per message: the Kafka shell hands records in (``take``), the carrier link hands
submit results, delivery reports and statuses in (``on_results``, ``on_reports``,
``on_status``), and the shell's timers call ``expire_submits`` and ``retry_held``. The
pipeline answers with attempt records, receipts and dead-letter records through a
``Sink``; when Kafka has made a request's outcome durable, the sink calls back and the
request's offset becomes committable. Everything here is synchronous and runs on the
event loop's thread.

A request's life: decode (undecodable -> dead letter) -> a repeat of a known id? (its
original outcome again, or resumed at the carrier its last attempt went to) -> expired?
(failed 30036) -> routing decision (refused -> failed receipt with the decision's code;
every affordable carrier at its cap or unavailable -> held, while intake pauses, until
one can take it or the hold limit passes) -> the attempt is written ahead to the attempts
log and, once Kafka has it, submitted -> accepted (``sent``) | rejected (next fallback,
up to ``max_attempts``, else ``failed``) | no answer in time (asked once more, then the
next fallback). Later the carrier's delivery report, which carries everything needed,
becomes a ``delivered`` or ``undelivered`` receipt on whichever worker receives it, and
is acknowledged to its carrier process once that receipt is durable.

No record stops the pipeline: an unexpected error while handling one message
dead-letters that message (reason ``internal``, the exception's class in a header),
counts it and goes on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final, Protocol

import msgspec
import structlog

from router.contracts import interconnect, wire
from router.contracts.codes import MESSAGE_FAULTS, Code, Scope, meaning
from router.core.decision import Decision, Router
from router.core.policy import CLASS_INDEX, Route
from router.engine import attempts
from router.engine.attempts import AttemptMemory, AttemptRecord, Known
from router.engine.metrics import Metrics
from router.engine.offsets import OffsetTracker
from router.support.logs import mask

log = structlog.get_logger("router.engine.pipeline")

ASKS: Final = 2
"""Times a carrier is asked for one attempt (the same id) before it counts as a timeout."""
HOLD_CODES: Final = frozenset({Code.QUEUE_OVERFLOW, Code.CARRIERS_UNAVAILABLE})
"""Refusals that wait for a carrier (up to the hold limit) instead of failing at once."""

Done = Callable[[], None]


class Sink(Protocol):
    """Where records go (Kafka in the worker). ``on_durable`` runs once Kafka has them."""

    def attempt(self, record: AttemptRecord, partition: int, on_durable: Done | None) -> None: ...

    def receipt(self, receipt: wire.Receipt, on_durable: Done | None) -> None: ...

    def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_durable: Done,
    ) -> None: ...


class Submitter(Protocol):
    def submit(self, carrier: str, item: interconnect.SubmitItem) -> None: ...

    def ack_report(self, host: str, carrier: str, message_id: str) -> None: ...


class Message:
    """A request in flight on this worker."""

    __slots__ = (
        "asked_epoch",
        "asks",
        "attempt",
        "awaiting",
        "deadline_ms",
        "decision",
        "done",
        "doubt_until",
        "failovers",
        "followers",
        "held_until",
        "hold_code",
        "key",
        "known",
        "offset",
        "partition_no",
        "raw",
        "raw_key",
        "request",
        "route",
        "submitted_at",
        "topic",
        "tried",
        "written",
    )

    def __init__(
        self,
        request: wire.SendRequest,
        done: Done,
        key: Hashable,
        topic: str,
        partition_no: int,
        offset: int,
        raw: bytes,
        raw_key: bytes | None,
    ) -> None:
        self.request = request
        self.done = done  # marks the Kafka offset finished; call once the outcome is durable
        self.key = key  # the offset tracker's key for the record's partition
        self.topic = topic
        self.partition_no = partition_no
        self.offset = offset
        self.raw = raw  # the record as read, for a dead letter should handling it fail
        self.raw_key = raw_key
        self.decision: Decision | None = None
        self.route: Route | None = None
        self.attempt = 0
        self.asks = 0  # times the current attempt was submitted
        self.asked_epoch = 0  # the link's epoch when it was last asked
        self.doubt_until = 0.0  # re-asks without an answer are not trusted until then
        self.awaiting = 0  # the attempt whose submit result is awaited; 0 if none
        self.submitted_at = 0.0
        self.failovers: list[wire.FailedAttempt] = []
        self.tried: list[str] = []  # carriers that rejected it or never answered
        self.written = False  # its outcome has been handed to the sink
        self.followers: list[Done] = []  # repeats of its id, answered with its outcome
        self.known: Known | None = None
        self.held_until = 0.0  # monotonic deadline of a hold; 0 when never held
        self.hold_code = 0
        r = request
        self.deadline_ms = (
            r.created_at + round(r.validity_s * 1000)
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
    if isinstance(error, RecursionError) or "nested" in text.lower():
        return "too_deep"
    return "not_json"


class Pipeline:
    def __init__(
        self,
        router: Router,
        carriers: dict[str, Any],
        link: Submitter,
        sink: Sink,
        tracker: OffsetTracker[Any],
        metrics: Metrics,
        *,
        submit_timeout_s: float,
        max_attempts: int,
        hold_limit_s: float = 30.0,
        memory: AttemptMemory | None = None,
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
        self.hold_limit_s = hold_limit_s
        self.memory = memory or AttemptMemory(window_s=300.0, max_ids=200_000)
        self.clock = clock
        self.wall_ms = wall_ms
        self.awaiting: dict[tuple[str, int], list[Message]] = {}
        self.timeouts: deque[tuple[float, Message, int]] = deque()
        self.held: deque[Message] = deque()
        self.active: dict[str, Message] = {}  # message id -> its message in flight here
        # When a silence proves nothing: the link reconnected (epoch), or the carrier went
        # offline or was announced again since the submit was asked.
        self.link_epoch = 0
        self.changed_at: dict[str, float] = {}  # carrier -> last status or directory change
        self.offline: set[str] = set()
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
        partition, ``partition_no`` its number in ``topic``. Never raises for any input."""
        tracker = self.tracker
        tracker.add(partition, offset)
        self.metrics.consumed.inc()

        def done() -> None:
            tracker.done(partition, offset)

        try:
            if value is None:
                raise msgspec.DecodeError("empty record (no value)")
            request = wire.decode_request(value)
        except (ValueError, RecursionError) as e:  # msgspec.DecodeError, UnicodeDecodeError
            self._dead_letter(dead_letter_reason(e), str(e), value, key, topic, partition_no,
                              offset, done)  # fmt: skip
            return
        except Exception as e:  # a decoder bug: the record must still get its outcome
            self._dead_letter("internal", repr(e), value, key, topic, partition_no, offset, done,
                              type(e).__name__)  # fmt: skip
            return
        m = Message(request, done, partition, topic, partition_no, offset, value, key)
        try:
            self._start(m, self.clock())
        except Exception as e:
            self._internal(m, e)

    def _start(self, m: Message, now: float) -> None:
        mid = m.request.id
        k = self.memory.get(mid)
        if k is not None:
            active = self.active.get(mid)
            if active is not None and not active.written:
                # A repeat while the original is in flight here: answered with it.
                self._duplicate("in_flight")
                active.followers.append(m.done)
                return
            if k.state == attempts.SENT:
                self._duplicate("sent")
                self._answer_sent(m, k)
                return
            if k.state == attempts.FAILED:
                self._duplicate("failed")
                self._answer_failed(m, k)
                return
            if k.attempt and k.carrier:
                # An attempt of a worker that died (or of a revoked owner): same carrier.
                self.metrics.resumed.inc()
                m.known = k
                self.active[mid] = m
                self._resume(m, k, now)
                return
        m.known = self.memory.entry(mid, m.partition_no, now)
        self.active[mid] = m
        self.route(m, now)

    def route(self, m: Message, now: float) -> None:
        if self._expired(m):
            self.fail(m, Code.EXPIRED)
            return
        t0 = time.perf_counter()
        d = self._decide(m, now)
        self.decision_time += time.perf_counter() - t0
        self.decisions += 1
        if d.code == 0:
            m.decision = d
            self.submit(m, d.routes[d.chosen], now)
        elif d.code in HOLD_CODES:
            self._hold(m, d.code, now)  # no carrier can take it now: wait, intake pauses
        else:
            m.decision = d
            self.fail(m, d.code, d.reason)

    def _decide(self, m: Message, now: float) -> Decision:
        r = m.request
        return self.router.decide(r.to, r.body, CLASS_INDEX[r.cls], r.max_price, now)

    def _resume(self, m: Message, k: Known, now: float) -> None:
        """Submit a re-read request to the carrier its last attempt went to, with the same
        id and attempt number: the carrier answers a repeat as a duplicate."""
        d = self._decide(m, now)
        if not d.segments:  # the destination or body no longer passes (new network?)
            m.decision = d
            self.fail(m, d.code, d.reason)
            return
        m.decision = d
        m.tried = list(k.tried)
        route = next((x for x in d.routes if x.carrier == k.carrier), None)
        if route is None:
            route = Route(k.carrier, k.price, 0.0, 0.0, 0.0, 0.0, 0.0, "", k.kind)
        m.attempt = k.attempt
        self._dispatch(m, route, now, write_ahead=False)

    def retry_held(self) -> None:
        """Try the held requests again (the shell calls this while any are held)."""
        now = self.clock()
        owns = self.tracker.owns
        for _ in range(len(self.held)):
            m = self.held.popleft()
            if m.written or not owns(m.key):
                continue
            try:
                if m.decision is None or m.attempt == 0:
                    self.route(m, now)
                else:
                    self._next(m, m.hold_code, now)
            except Exception as e:
                self._internal(m, e)

    def _hold(self, m: Message, code: int, now: float) -> None:
        if not m.held_until:
            m.held_until = now + self.hold_limit_s
        elif now >= m.held_until:
            self.fail(m, code)
            return
        m.hold_code = code
        self.held.append(m)

    def _expired(self, m: Message) -> bool:
        return m.deadline_ms is not None and self.wall_ms() > m.deadline_ms

    # -- submits -----------------------------------------------------------------------

    def submit(self, m: Message, route: Route, now: float) -> None:
        """The next attempt of ``m`` at ``route``: written ahead, then submitted."""
        m.attempt += 1
        self._dispatch(m, route, now, write_ahead=True)

    def _dispatch(self, m: Message, route: Route, now: float, *, write_ahead: bool) -> None:
        m.route = route
        m.asks = 0
        m.doubt_until = 0.0
        d = m.decision
        assert d is not None
        record = AttemptRecord(
            id=m.request.id,
            state=attempts.IN_FLIGHT,
            carrier=route.carrier,
            attempt=m.attempt,
            kind=route.kind,
            price=route.price,
            tried=tuple(m.tried),
            segments=d.segments,
            encoding=d.encoding,
            ts=self.wall_ms(),
        )
        if m.known is not None:
            m.known.apply(record)
        if not write_ahead:
            self._send(m, m.attempt)
            return
        attempt = m.attempt
        self.sink.attempt(record, m.partition_no, lambda: self._send_guarded(m, attempt))

    def _send_guarded(self, m: Message, attempt: int) -> None:
        try:
            self._send(m, attempt)
        except Exception as e:
            self._internal(m, e)

    def _send(self, m: Message, attempt: int) -> None:
        """The attempt is durable in the attempts log (or was already): submit it."""
        if m.written or m.attempt != attempt or not self.tracker.owns(m.key):
            return  # answered meanwhile, or the partition moved to another worker
        d, route, r = m.decision, m.route, m.request
        assert d is not None
        assert route is not None
        m.awaiting = attempt
        m.asks += 1
        m.submitted_at = self.clock()
        m.asked_epoch = self.link_epoch
        carrier = route.carrier
        self.link.submit(
            carrier,
            interconnect.SubmitItem(
                id=r.id,
                carrier=carrier,
                to=d.number or r.to,
                account=r.account,
                segments=d.segments,
                price=route.price,
                attempt=attempt,
                encoding=d.encoding,
                country=d.country,
                ts=self.wall_ms(),
            ),
        )
        key = (r.id, attempt)
        waiting = self.awaiting.get(key)
        if waiting is None:
            self.awaiting[key] = [m]
        elif m not in waiting:
            waiting.append(m)
        self.metrics.child(self.metrics.routed, carrier, route.kind).inc()

    def on_published(self, carrier: str, items: Sequence[interconnect.SubmitItem]) -> None:
        """The broker took these submits: the carrier's answer is due within the timeout."""
        deadline = self.clock() + self.submit_timeout_s
        awaiting = self.awaiting
        timeouts = self.timeouts
        for item in items:
            waiting = awaiting.get((item.id, item.attempt))
            if waiting:
                for m in waiting:
                    timeouts.append((deadline, m, item.attempt))

    def _unwait(self, m: Message, attempt: int) -> None:
        key = (m.request.id, attempt)
        waiting = self.awaiting.get(key)
        if waiting is not None:
            if m in waiting:
                waiting.remove(m)
            if not waiting:
                del self.awaiting[key]
        m.awaiting = 0

    def on_results(self, carrier: str, results: Sequence[interconnect.SubmitResult]) -> None:
        now = self.clock()
        observe = self.metrics.submit_seconds.observe
        owns = self.tracker.owns
        for res in results:
            waiting = self.awaiting.get((res.id, res.attempt))
            if not waiting:
                continue  # answered after its timeout: that attempt has moved on already
            answered_by = res.carrier or carrier  # batches from a carrier process name each
            m = next((x for x in waiting if x.route and x.route.carrier == answered_by), None)
            if m is None:
                continue  # a result naming another carrier: not this attempt's
            self._unwait(m, res.attempt)
            if m.written or not owns(m.key):
                continue
            observe(now - m.submitted_at)
            try:
                self._result(m, res, now)
            except Exception as e:
                self._internal(m, e)

    def _result(self, m: Message, res: interconnect.SubmitResult, now: float) -> None:
        assert m.route is not None
        cid = m.route.carrier  # the carrier this attempt went to
        health = self.router.health
        if res.accepted:
            health.submit_ok(cid)
            self.sent(m, res.price)
            return
        code = res.code or Code.UNKNOWN_ERROR
        if code != Code.QUEUE_OVERFLOW and code not in MESSAGE_FAULTS:
            # A full carrier is busy, not broken; a bad number is the message's fault.
            health.submit_failed(cid, now, meaning(Scope.REJECTED, code))
        self.failover(m, code, now)

    def expire_submits(self) -> None:
        """Ask again, or fail over, every submit whose result did not come in time."""
        now = self.clock()
        timeouts = self.timeouts
        owns = self.tracker.owns
        while timeouts and timeouts[0][0] <= now:
            _, m, attempt = timeouts.popleft()
            if m.awaiting != attempt or m.written or not owns(m.key):
                continue  # answered in time, or no longer ours
            try:
                if m.asks < ASKS or self._doubtful(m, now):
                    # No answer is not a rejection: the carrier may have taken it (and the
                    # result been lost). Ask the same carrier again, with the same id.
                    self.metrics.resubmits.inc()
                    self._send(m, attempt)
                    continue
                self._unwait(m, attempt)
                assert m.route is not None
                self.router.health.submit_failed(m.route.carrier, now, "submit timeout")
                self.failover(m, Code.UNKNOWN_ERROR, now)
            except Exception as e:
                self._internal(m, e)

    def _doubtful(self, m: Message, now: float) -> bool:
        """Whether the last ask's silence proves nothing (so the carrier is asked again,
        within the hold limit): the link reconnected since, the carrier is offline, or it
        went offline or was announced again after the ask. Failing over then could send
        the message to a second carrier while the first one has it."""
        assert m.route is not None
        carrier = m.route.carrier
        doubtful = (
            m.asked_epoch != self.link_epoch
            or carrier in self.offline
            or self.changed_at.get(carrier, -1.0) >= m.submitted_at
        )
        if not doubtful or self._expired(m):
            return False
        if not m.doubt_until:
            m.doubt_until = now + self.hold_limit_s
        return now < m.doubt_until

    def failover(self, m: Message, code: int, now: float) -> None:
        route = m.route
        assert route is not None
        m.failovers.append(wire.FailedAttempt(route.carrier, m.attempt, code))
        if route.carrier not in m.tried:
            m.tried.append(route.carrier)
        self.metrics.child(self.metrics.failovers, str(code)).inc()
        self._next(m, code, now)

    def _next(self, m: Message, code: int, now: float) -> None:
        """The next carrier for ``m`` after a rejection, a hold while the remaining ones
        are all full or unavailable, or its ``failed`` receipt."""
        if self._expired(m):
            self.fail(m, Code.EXPIRED)
            return
        d = m.decision
        assert d is not None
        if m.attempt >= self.max_attempts:
            self.fail(m, code)
            return
        if not d.routes:  # decided while nothing could take it (a resumed attempt)
            fresh = self._decide(m, now)
            if fresh.routes:
                d = m.decision = fresh
        tried = m.tried
        i = self.router.next_route(d.routes, -1, d.segments, d.max_price, now, exclude=tried)
        if i >= 0:
            nxt = d.routes[i]
            log.debug("failover", frm=m.route.carrier if m.route else None, to=nxt.carrier,
                      code=code, dest=mask(m.request.to))  # fmt: skip
            self.submit(m, nxt, now)
            return
        cap, segs = d.max_price, d.segments
        others = any(
            r.carrier not in tried and (cap is None or r.price * segs <= cap) for r in d.routes
        )
        if others:
            self._hold(m, code, now)  # the rest are full or unavailable for now: wait
        else:
            self.fail(m, code)

    # -- outcomes ----------------------------------------------------------------------

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
            carrier=route.carrier,
            route="direct" if kind == "direct" else "aggregator",
            attempt=m.attempt,
            segments=d.segments,
            encoding=d.encoding,
            price=price,
            failovers=m.failovers,
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

    # -- partitions --------------------------------------------------------------------

    def forget(self, partitions: set[int]) -> None:
        """The requests partitions ``partitions`` were revoked: drop what this worker
        knew of their messages (the next owner restores it from the attempts log)."""
        for mid in [i for i, m in self.active.items() if m.partition_no in partitions]:
            del self.active[mid]
        self.memory.forget_partitions(partitions)

    def restore(self, partition: int, records: Sequence[AttemptRecord]) -> None:
        self.memory.restore(records, partition, self.clock())

    # -- from carriers -----------------------------------------------------------------

    def on_reports(self, host: str, reports: Sequence[interconnect.DeliveryReport]) -> None:
        """Delivery reports from carrier process ``host``: each becomes a receipt, and is
        acknowledged to ``host`` once Kafka has the receipt."""
        for rep in reports:
            try:
                self._report(host, rep)
            except Exception as e:
                self.metrics.internal_errors.inc()
                log.error("internal error handling a delivery report",
                          id=wire.quote(rep.id, 64), error=repr(e)[:300])  # fmt: skip

    def _report(self, host: str, rep: interconnect.DeliveryReport) -> None:
        m = self.metrics
        m.child(m.delivery_reports, rep.status).inc()
        if rep.resent:
            m.reports_resent.inc()
        code = "" if rep.code is None else str(rep.code)
        counter = m.child(m.receipts, rep.status, code)
        link = self.link

        def durable() -> None:
            counter.inc()
            link.ack_report(host, rep.carrier, rep.id)

        self.sink.receipt(
            wire.Receipt(
                id=rep.id,
                status=rep.status,
                ts=self.wall_ms(),
                account=rep.account,
                error_code=rep.code,
                error_message=(
                    meaning(Scope.UNDELIVERED, rep.code) if rep.code is not None else None
                ),
                carrier=rep.carrier,
                route=rep.route,
                attempt=rep.attempt,
                segments=rep.segments,
                encoding=rep.encoding,
                price=rep.price * rep.segments,
                currency=rep.currency,
            ),
            durable,
        )
        spec = self.carriers.get(rep.carrier)
        if spec is not None and not rep.resent:  # a re-sent report may have counted already
            latency = (rep.ts - rep.submitted_ts) / 1000.0 if rep.submitted_ts else None
            self.router.health.delivery(spec, rep.country, rep.status == "delivered", latency,
                                        self.clock())  # fmt: skip

    def on_changed(self, carriers: Sequence[str]) -> None:
        if not carriers:
            self.link_epoch += 1
            return
        now = self.clock()
        for carrier in carriers:
            self.changed_at[carrier] = now

    def on_status(self, carrier: str, online: bool) -> None:
        if carrier not in self.carriers:
            return
        now = self.clock()
        self.changed_at[carrier] = now
        if online:
            self.offline.discard(carrier)
        else:
            self.offline.add(carrier)
        self.router.health.status(carrier, online, now)
        (log.debug if online else log.warning)("carrier status", carrier=carrier, online=online)
