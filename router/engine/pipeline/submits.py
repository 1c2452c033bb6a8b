"""An attempt's way to a carrier and back: written ahead to the attempts log, submitted
once Kafka has it, then accepted (``sent``), rejected (the next affordable carrier, up to
``max_attempts``), or unanswered in time (asked once more with the same id, then the next
carrier). While every remaining carrier is full or unavailable the message is held (and
intake pauses) until one can take it or the hold limit passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import structlog

from router.contracts import interconnect, wire
from router.contracts.codes import MESSAGE_FAULTS, Code, Scope, meaning
from router.core.policy import Route
from router.engine import attempts
from router.engine.attempts import AttemptRecord
from router.engine.pipeline.message import Message
from router.engine.pipeline.outcomes import Outcomes
from router.support.logs import mask

log = structlog.get_logger("router.engine.pipeline")

ASKS: Final = 2
"""Times a carrier is asked for one attempt (the same id) before it counts as a timeout."""


class Submits(Outcomes):
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
        m.last_ask = ask = self.next_ask()
        m.submitted_at = self.clock()
        m.answer_due = 0.0  # until the broker has this ask
        m.submitted_ms = wall = self.wall_ms()
        if not m.first_submit_ms:
            m.first_submit_ms = wall
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
                ts=wall,
                sender=r.sender or "",
                ask=ask,
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
                    if m.last_ask == item.ask:  # this ask of it (not an earlier one's batch)
                        m.answer_due = deadline
                timeouts.append((deadline, item.id, item.attempt))

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
            if not res.accepted and res.ask and res.ask != m.last_ask:
                # A rejection of an earlier ask (a re-asked timeout, or the previous
                # owner's ask before a rebalance): the last ask may still be accepted, so
                # only its answer (or its silence) moves the message on.
                continue
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
        awaiting = self.awaiting
        while timeouts and timeouts[0][0] <= now:
            _, mid, attempt = timeouts.popleft()
            waiting = awaiting.get((mid, attempt))
            if waiting:  # else answered in time
                for m in list(waiting):  # asking again or failing over changes it
                    self._expire(m, attempt, now)

    def _expire(self, m: Message, attempt: int, now: float) -> None:
        if (
            not m.answer_due
            or m.answer_due > now  # asked again since, and that ask is not due yet
            or m.awaiting != attempt
            or m.written
            or not self.tracker.owns(m.key)
        ):
            return  # answered in time, or no longer ours
        m.answer_due = 0.0
        try:
            if m.asks < ASKS or self._doubtful(m, now):
                # No answer is not a rejection: the carrier may have taken it (and the
                # result been lost). Ask the same carrier again, with the same id.
                self.metrics.resubmits.inc()
                self._send(m, attempt)
                return
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

    def _hold(self, m: Message, code: int, now: float) -> None:
        if not m.held_until:
            m.held_until = now + self.hold_limit_s
        elif now >= m.held_until:
            self.fail(m, code)
            return
        m.hold_code = code
        self.held.append(m)
