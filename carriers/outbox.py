"""What a carrier process publishes, from the moment it is decided until the broker took it.

Results and reports wait in one heap ordered by due time (bounded by what the carriers
have accepted: throughput cap x report delay). ``pump`` wakes at most once per ``TICK_S``
(every item has a due time of its own: waking for each cost more than the simulation
itself at a few thousand a second) to move due items into per-topic batches, flushed at
``MAX_BATCH`` items or ``FLUSH_INTERVAL_S`` after the first item (``REPORT_FLUSH_S`` for
reports), onto a bounded publish queue that the data connection's publishers empty
(``next_batch``, then ``published`` after the PUBACK).

Reports: every report goes through the ``ReportStore`` (``take`` before it is batched;
``published`` once the broker took its batch), which also says which reports are due to
be published again; an offline carrier holds its reports, re-sends included, until it
is back. A batch whose publish was cut off by a lost connection is published again
after the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from carriers.endpoint import Endpoint
from carriers.journal import Journal
from carriers.reports import ReportStore
from router.contracts import interconnect

REPORT_FLUSH_S = 0.025  # reports are not latency-critical: fewer, larger batches
TICK_S = 0.002  # the pump sleeps at least this long: an item is published up to 2 ms late
PUBLISH_QUEUE = 1024
OFFLINE_RETRY_S = 0.25

Payload = interconnect.SubmitResult | interconnect.DeliveryReport


# (due at, sequence number, carrier, router reply topic or None for a report, payload): a
# tuple, so that the heap compares in C (at, then seq: never the payloads).
_Due = tuple[float, int, str, str | None, Payload]


@dataclass(slots=True)
class _Batch:
    deadline: float
    items: list[Payload]


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    reports: list[interconnect.DeliveryReport]  # the reports in it (none for results)


class Outbox:
    """The due-time heap, the batches and the publish queue of one carrier process."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        reports: ReportStore,
        *,
        host_id: str,
        clock: Callable[[], float],
        journal: Journal | None,
    ) -> None:
        self.endpoints = endpoints
        self.reports = reports
        self.host_id = host_id
        self.clock = clock
        self.journal = journal
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        # One batch per router reply topic (results) and one for every report (None).
        self._batches: dict[str | None, _Batch] = {}
        # Batches to publish; one whose publish was cut off waits in _retry (at most one
        # per publisher) and stays unfinished in the queue's count until it is published.
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(PUBLISH_QUEUE)
        self._retry: deque[Outgoing] = deque()
        self._draining = False

    def schedule(self, at: float, carrier: str, reply_to: str | None, payload: Payload) -> None:
        """Publish ``payload`` at ``at`` (clock s): a result to the router's ``reply_to``
        topic, or (``reply_to`` None) a report. Call ``wake`` once after scheduling."""
        heapq.heappush(self._heap, (at, next(self._seq), carrier, reply_to, payload))

    def wake(self) -> None:
        """Let the pump look again: something was scheduled, or a resend clock started."""
        self._wake.set()

    def drain(self) -> None:
        """Flush what is due now; then ``pump`` returns."""
        self._draining = True
        self._wake.set()

    async def join(self) -> None:
        """Until every batch queued has been published."""
        await self._queue.join()

    @property
    def unsent(self) -> int:
        """Batches queued or waiting to be published again."""
        return self._queue.qsize() + len(self._retry)

    # ---- timing and batching ------------------------------------------------------------

    async def pump(self) -> None:
        """Move due items into batches and full or timed-out batches onto the queue, until
        ``drain``."""
        heap, batches, reports = self._heap, self._batches, self.reports
        pop, push, seq = heapq.heappop, heapq.heappush, self._seq
        while True:
            now = self.clock()
            if not self._draining:
                for report in reports.due(now):
                    push(heap, (now, next(seq), report.carrier, None, report))
            while heap and heap[0][0] <= now:
                _, _, carrier, key, payload = pop(heap)
                if key is None:  # a delivery report
                    assert isinstance(payload, interconnect.DeliveryReport)
                    if self.endpoints[carrier].offline:
                        # an offline carrier holds its reports until it is back
                        push(heap, (now + OFFLINE_RETRY_S, next(seq), carrier, None, payload))
                        continue
                    if not reports.take(payload):
                        continue  # acknowledged or given up while it waited
                batch = batches.get(key)
                if batch is None:
                    wait = interconnect.FLUSH_INTERVAL_S if key is not None else REPORT_FLUSH_S
                    batch = batches[key] = _Batch(now + wait, [])
                batch.items.append(payload)
                if len(batch.items) >= interconnect.MAX_BATCH:
                    await self._flush(key)
            for key in [k for k, b in batches.items() if b.deadline <= now or self._draining]:
                await self._flush(key)
            if self._draining:
                return
            await self._sleep(self._next_at(), now + TICK_S)

    def _next_at(self) -> float | None:
        """When the pump has something to do next, without being woken."""
        deadlines = [b.deadline for b in self._batches.values()]
        if self._heap:
            deadlines.append(self._heap[0][0])
        resend_at = self.reports.next_due()
        if resend_at is not None:
            deadlines.append(resend_at)
        return min(deadlines, default=None)

    async def _sleep(self, next_at: float | None, not_before: float) -> None:
        """Until ``next_at`` (None: until woken), but not before ``not_before``, so that
        items due within a tick of each other are moved in one pass."""
        self._wake.clear()
        if next_at is not None and next_at <= not_before:  # due within the tick: just wait
            await asyncio.sleep(max(0.0, not_before - self.clock()))
            return
        timeout = None if next_at is None else max(0.0, next_at - self.clock())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _flush(self, reply_to: str | None) -> None:
        batch = self._batches.pop(reply_to)
        if reply_to is None:
            reports = [r for r in batch.items if isinstance(r, interconnect.DeliveryReport)]
            dropped = self.reports.take_dropped()
            if dropped and self.journal is not None:
                self.journal.dropped(dropped)
            payload = interconnect.REPORT_BATCH.encode(
                interconnect.DeliveryReportBatch(self.host_id, reports)
            )
            topic = interconnect.host_dlr_topic(self.host_id)
            await self._queue.put(Outgoing(topic, payload, reports))
        else:
            results = [r for r in batch.items if isinstance(r, interconnect.SubmitResult)]
            payload = interconnect.RESULT_BATCH.encode(
                interconnect.SubmitResultBatch(self.host_id, results)
            )
            await self._queue.put(Outgoing(reply_to, payload, []))

    # ---- publishing (by the data connection's publishers) -------------------------------

    async def next_batch(self) -> Outgoing:
        """The batch to publish next: one whose publish was cut off first, then the queue's."""
        return self._retry.popleft() if self._retry else await self._queue.get()

    def cut_off(self, out: Outgoing) -> None:
        """``out``'s publish did not complete: it goes first after the reconnect."""
        self._retry.appendleft(out)

    def published(self, out: Outgoing) -> None:
        """The broker took ``out`` (its PUBACK came): its reports' resend clocks start."""
        self._queue.task_done()
        if out.reports:
            acked, dropped = self.reports.published(out.reports, self.clock())
            if self.journal is not None:
                self.journal.published(out.reports, acked, dropped)
            self._wake.set()  # their resend clocks run from now
