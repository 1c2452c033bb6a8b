"""A record's way in: decoded (undecodable -> dead letter), checked against the ids this
worker knows (a repeat gets its original outcome again, or is resumed at the carrier its
last attempt went to), expired or not, then routed: submitted, held while no carrier can
take it, or failed with the decision's code. The dedupe memory follows the partitions:
restored from the attempts log on assignment, forgotten on revocation.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Final

import msgspec

from router.contracts import wire
from router.contracts.codes import Code
from router.core.policy import Route
from router.engine import attempts
from router.engine.attempts import AttemptRecord, Known
from router.engine.pipeline.message import Message
from router.engine.pipeline.outcomes import dead_letter_reason
from router.engine.pipeline.submits import Submits

HOLD_CODES: Final = frozenset({Code.QUEUE_OVERFLOW, Code.CARRIERS_UNAVAILABLE})
"""Refusals that wait for a carrier (up to the hold limit) instead of failing at once."""


class Intake(Submits):
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

    # -- partitions --------------------------------------------------------------------

    def forget(self, partitions: set[int]) -> None:
        """The requests partitions ``partitions`` were revoked: drop what this worker
        knew of their messages (the next owner restores it from the attempts log)."""
        for mid in [i for i, m in self.active.items() if m.partition_no in partitions]:
            m = self.active.pop(mid)
            # Nothing more is done for it here, even if the partition comes back: a late
            # result for its ask must not move it on beside the new owner's message.
            m.written = True
            if m.awaiting:
                self._unwait(m, m.awaiting)
        self.memory.forget_partitions(partitions)

    def restore(self, partition: int, records: Sequence[AttemptRecord]) -> None:
        self.memory.restore(records, partition, self.clock())
