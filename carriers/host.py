"""One process hosting many carriers as MQTT clients against Mosquitto.

Connections (the choice, and why): a carrier's status must turn ``offline`` on its own
topic when its process dies without warning, and only the broker can publish then,
through a last-will. A connection has exactly one will, so one shared connection per
process could only announce the *process* dead, on one topic, and routers would have to
map hosts to carriers. So each process opens:

- one **presence** connection per carrier: keep-alive only, with the will ``offline``
  (retained, QoS 1) on ``supernet/carrier/<id>/status``; it publishes ``online``/
  ``offline`` (retained) as scenarios switch the carrier, and ``offline`` on a clean stop.
  These are idle TCP connections (a keep-alive ping every 30 s): ~1,500 of them cost a
  few MB and ~1,500 file descriptors in this process and in Mosquitto (check
  ``ulimit -n`` for both), and are opened a few dozen at a time;
- one **data** connection for the whole process, which carries all the traffic: it
  subscribes to every hosted carrier's submit topic and to the host's ``dlr-ack`` topic,
  and publishes results and reports in batches, with several QoS 1 publishes in flight.
  Its own will marks the host offline on ``supernet/carriers/host/<host id>/status``.

Timing: results and reports wait in one heap ordered by due time (bounded by what the
carriers have accepted: throughput cap x report delay); a pump moves due items into
per-topic batches, flushed at ``MAX_BATCH`` items or ``FLUSH_INTERVAL_S`` after the first
item, onto a bounded publish queue.

Acknowledged reports: a report is held in a ``ReportStore`` from its first publication
until a router acknowledges it on the host's ``dlr-ack`` topic, and is published again
(``resent`` + 1) every ``report_resend_s`` meanwhile, through the same batches. The store
is bounded (``max_unacked_reports``; past it the oldest report is given up and counted
as dropped). An offline carrier holds its reports, re-sends included, until it is back.

Reconnection: every connection, data and presence, survives the broker going away. It
reconnects with capped exponential backoff and jitter (``RECONNECT_INITIAL_S`` doubling
to ``RECONNECT_CAP_S``), and on every (re)connect subscribes again and publishes its
retained state again (the data connection: the directory and the host status; a presence
connection: its carrier's current status), since the broker may have lost it. Endpoints
(idempotency memory, token buckets, ledger), the heap and the report store live on
across reconnects; batches queued meanwhile wait in the bounded publish queue, and a
batch whose publish was cut off is published again. Outages are logged once for the data
connection and once, summarised, for all presence connections.

Journal: with a ``carriers.journal.Journal``, the host takes over the state it holds
(idempotency memory, pending and unacknowledged reports) at construction and appends one
record per submit batch, published report batch and acknowledgement batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import aiomqtt
import msgspec
import structlog

from carriers import scenario as scenario_mod
from carriers.endpoint import Endpoint
from carriers.journal import AcceptedItem, Journal, Key, Replay
from carriers.ledger import Ledger
from carriers.reports import MAX_UNACKED_REPORTS, ReportStore
from router.contracts import interconnect

log = structlog.get_logger("carriers.host")

PRESENCE_KEEPALIVE_S = 30
CONNECT_CONCURRENCY = 32
# A QoS 1 publish waits for the broker's PUBACK (tens of ms when the loop is busy), so
# the publish rate is bounded by how many are in flight, not by CPU.
PUBLISHERS = 32
REPORT_FLUSH_S = 0.025  # reports are not latency-critical: fewer, larger batches
PUBLISH_QUEUE = 1024
SUBSCRIBE_CHUNK = 200
SHUTDOWN_DEADLINE_S = 10.0
OFFLINE_RETRY_S = 0.25
RECONNECT_INITIAL_S = 0.2
RECONNECT_CAP_S = 5.0
# Presence losses are summarised in one log line this long after the first of an outage.
PRESENCE_SUMMARY_S = 1.0


class Backoff:
    """Capped exponential delays with jitter: ``initial`` doubling up to ``cap``, each
    drawn uniformly from its upper half, so that many clients do not retry in step."""

    def __init__(
        self,
        initial: float = RECONNECT_INITIAL_S,
        cap: float = RECONNECT_CAP_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self._rng = rng
        self._attempt = 0

    def delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 64)
        return ceiling * (0.5 + 0.5 * self._rng())

    def reset(self) -> None:
        self._attempt = 0


def connection_lost(exc: BaseException) -> bool:
    """True for an MQTT error, or a task group's errors that are all MQTT errors."""
    if isinstance(exc, aiomqtt.MqttError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(connection_lost(e) for e in exc.exceptions)
    return False


@dataclass(order=True, slots=True)
class _Due:
    at: float
    seq: int
    carrier: str = field(compare=False)
    reply_to: str | None = field(compare=False)  # None: a delivery report
    payload: interconnect.SubmitResult | interconnect.DeliveryReport = field(compare=False)


@dataclass(slots=True)
class _Batch:
    deadline: float
    items: list[interconnect.SubmitResult | interconnect.DeliveryReport]


@dataclass(slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    reports: list[interconnect.DeliveryReport]  # the reports in it (none for results)


class CarrierHost:
    """Runs endpoints against a broker until ``stop`` is set; then shuts down cleanly."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        ledger: Ledger,
        *,
        mqtt_host: str,
        mqtt_port: int,
        host_id: str,
        scenario: scenario_mod.Scenario | None = None,
        clock: Callable[[], float] = time.monotonic,
        report_resend_s: float = interconnect.REPORT_RESEND_S,
        max_unacked_reports: int = MAX_UNACKED_REPORTS,
        journal: Journal | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.ledger = ledger
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.host_id = host_id
        self.scenario = scenario
        self.clock = clock
        self.journal = journal
        self.reports = ReportStore(ledger, resend_s=report_resend_s, limit=max_unacked_reports)
        self.ready = asyncio.Event()  # every carrier online and subscribed (the first time)
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        # One batch per router reply topic (results) and one for every report (None).
        self._batches: dict[str | None, _Batch] = {}
        # Batches to publish; one whose publish was cut off waits in _retry (at most one
        # per publisher) and stays unfinished in the queue's count until it is published.
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue(PUBLISH_QUEUE)
        self._retry: deque[_Outgoing] = deque()
        self._status_changed = {cid: asyncio.Event() for cid in endpoints}
        self._intake_closed = False
        self._stopping = asyncio.Event()  # presence connections: go offline and close
        self._data_stop = asyncio.Event()  # the data connection: say goodbye and close
        self._draining = False
        self._connect_slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self._ever_present: set[str] = set()
        self._all_present = asyncio.Event()
        # presence outages: carriers whose connection is down, losses, since when
        self._presence_down: set[str] = set()
        self._presence_lost = 0
        self._presence_outage_at: float | None = None
        self._presence_summary: asyncio.TimerHandle | None = None
        if journal is not None:
            self._restore(journal.restored)

    # ---- lifecycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            presence = [tg.create_task(self._presence(cid)) for cid in self.endpoints]
            if not presence:
                self._all_present.set()
            data = tg.create_task(self._data_connection())
            pump = tg.create_task(self._pump())
            await _first_of(self.ready, stop)
            runner = None
            if self.scenario is not None and self.ready.is_set():
                runner = tg.create_task(self._run_scenario())

            await stop.wait()
            log.info("carriers stopping", host=self.host_id)
            self._intake_closed = True  # acknowledgements are still taken while draining
            if runner is not None:
                runner.cancel()
            try:
                async with asyncio.timeout(SHUTDOWN_DEADLINE_S):
                    self._draining = True  # flush what is due now, then the pump ends
                    self._wake.set()
                    await pump
                    await self._queue.join()
            except TimeoutError:
                unsent = self._queue.qsize() + len(self._retry)
                log.warning("shutdown deadline passed; unsent batches dropped", batches=unsent)
                pump.cancel()
            self._stopping.set()  # presence connections publish offline and close
            for event in self._status_changed.values():
                event.set()
            try:
                async with asyncio.timeout(SHUTDOWN_DEADLINE_S):
                    await asyncio.gather(*presence)
            except TimeoutError:
                log.warning("shutdown deadline passed; some carriers did not say offline")
            self._data_stop.set()  # clear the directory, host offline, disconnect
            try:
                async with asyncio.timeout(SHUTDOWN_DEADLINE_S):
                    await data
            except TimeoutError:
                log.warning("shutdown deadline passed; the directory was not cleared")
            if self._presence_summary is not None:
                self._presence_summary.cancel()
        pending = sum(c.reports_pending for c in self.ledger.carriers.values())
        log.info(
            "carriers stopped",
            host=self.host_id,
            reports_pending=pending,
            reports_unacked=len(self.reports),
        )

    def _restore(self, restored: Replay) -> None:
        """Take over what the journal says an earlier run held: the idempotency memory,
        the reports not published yet (due when they were due, or now) and those published
        but not acknowledged (published again now, as re-sends)."""
        now = self.clock()
        wall_ms = time.time_ns() // 1_000_000
        heap, seq, endpoints, ledger = self._heap, self._seq, self.endpoints, self.ledger
        other = pending = unacked = 0
        for key, item in restored.accepted.items():
            endpoint = endpoints.get(item.carrier)
            if endpoint is None:
                other += 1
                continue
            endpoint.restore_accepted(item.id, item.price, now + (item.result_ms - wall_ms) / 1e3)
            report = item.report
            if report is None or key in restored.acked or key in restored.dropped:
                continue
            published = restored.published.get(key)
            if published is None:
                ledger[item.carrier].reports_restored += 1
                at = now + max(0, item.report_due_ms - wall_ms) / 1e3
                pending += 1
            else:
                report = msgspec.structs.replace(report, resent=published.resent + 1)
                self.reports.restore(report)
                at = now
                unacked += 1
            heapq.heappush(heap, _Due(at, next(seq), item.carrier, None, report))
        dropped = self.reports.take_dropped()
        if dropped and self.journal is not None:
            self.journal.dropped(dropped)
        log.info(
            "journal restored",
            accepted=len(restored.accepted) - other,
            reports_pending=pending,
            reports_unacked=unacked,
            reports_dropped=len(dropped),
            other_carriers=other,
            damaged_bytes=restored.damaged_bytes,
        )

    # ---- data connection ------------------------------------------------------------

    async def _data_connection(self) -> None:
        """Connect, serve, and reconnect after every loss until told to stop."""
        backoff = Backoff()
        lost_at: float | None = None  # start of the current outage
        connected_before = False
        while not self._data_stop.is_set():
            client = aiomqtt.Client(
                self.mqtt_host,
                self.mqtt_port,
                identifier=f"supernet-carriers-{self.host_id}",
                will=aiomqtt.Will(
                    interconnect.host_status_topic(self.host_id),
                    interconnect.OFFLINE,
                    qos=1,
                    retain=True,
                ),
                max_inflight_messages=512,
                keepalive=30,
            )
            try:
                async with client:
                    if lost_at is not None:
                        log.info(
                            "broker connection restored",
                            host=self.host_id,
                            outage_s=round(self.clock() - lost_at, 1),
                        )
                    lost_at = None
                    connected_before = True
                    backoff.reset()
                    await self._data_session(client)
                return
            except Exception as e:
                if not connection_lost(e):
                    raise
                if lost_at is None:
                    lost_at = self.clock()
                    event = "broker connection lost" if connected_before else "broker unreachable"
                    log.warning(
                        f"{event}; reconnecting with backoff",
                        host=self.host_id,
                        broker=f"{self.mqtt_host}:{self.mqtt_port}",
                        error=_describe(e),
                    )
            await _pause(self._data_stop, backoff.delay())

    async def _data_session(self, client: aiomqtt.Client) -> None:
        """One connection's life: subscribe, announce, receive and publish; on
        ``_data_stop``, clear the directory and mark the host offline."""
        topics = [
            (interconnect.host_submit_topic(self.host_id), 1),
            (interconnect.host_dlr_ack_topic(self.host_id), 1),
        ]
        topics += [(interconnect.submit_topic(cid), 1) for cid in self.endpoints]
        for i in range(0, len(topics), SUBSCRIBE_CHUNK):
            await client.subscribe(topics[i : i + SUBSCRIBE_CHUNK])
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._receive(client))]
            tasks += [tg.create_task(self._publish(client)) for _ in range(PUBLISHERS)]
            if not self.ready.is_set():
                await _first_of(self._all_present, self._data_stop)
            if not self._data_stop.is_set():
                directory = interconnect.HostDirectory(self.host_id, sorted(self.endpoints))
                await client.publish(
                    interconnect.directory_topic(self.host_id),
                    interconnect.DIRECTORY.encode(directory),
                    qos=1,
                    retain=True,
                )
                await client.publish(
                    interconnect.host_status_topic(self.host_id),
                    interconnect.ONLINE,
                    qos=1,
                    retain=True,
                )
                if not self.ready.is_set():
                    self.ready.set()
                    log.info("carriers ready", carriers=len(self.endpoints), host=self.host_id)
            await self._data_stop.wait()
            for task in tasks:
                task.cancel()
        # An empty retained payload deletes the directory entry.
        await client.publish(interconnect.directory_topic(self.host_id), b"", qos=1, retain=True)
        await client.publish(
            interconnect.host_status_topic(self.host_id), interconnect.OFFLINE, qos=1, retain=True
        )

    # ---- presence (one connection per carrier, for its last-will) -------------------

    async def _presence(self, carrier_id: str) -> None:
        will = aiomqtt.Will(
            interconnect.status_topic(carrier_id), interconnect.OFFLINE, qos=1, retain=True
        )
        backoff = Backoff()
        while not self._stopping.is_set():
            client = aiomqtt.Client(
                self.mqtt_host,
                self.mqtt_port,
                identifier=f"supernet-carrier-{carrier_id}-{self.host_id}",
                will=will,
                keepalive=PRESENCE_KEEPALIVE_S,
            )
            up = False
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with self._connect_slots:
                        if self._stopping.is_set():
                            return
                        await stack.enter_async_context(client)
                    up = True
                    backoff.reset()
                    async with asyncio.TaskGroup() as tg:
                        watch = tg.create_task(_until_disconnected(client))
                        await self._announce(client, carrier_id)
                        watch.cancel()
                return  # stopping: offline published
            except Exception as e:
                if not connection_lost(e):
                    raise
                if up:
                    self._presence_lost_one(carrier_id)
            await _pause(self._stopping, backoff.delay())

    async def _announce(self, client: aiomqtt.Client, carrier_id: str) -> None:
        """Publish the carrier's status now and whenever it changes; ``offline`` when
        stopping."""
        topic = interconnect.status_topic(carrier_id)
        endpoint = self.endpoints[carrier_id]
        changed = self._status_changed[carrier_id]
        published: bool | None = None
        while True:
            if self._stopping.is_set():
                endpoint.overrides.offline = True
            online = not endpoint.offline
            if online != published:
                payload = interconnect.ONLINE if online else interconnect.OFFLINE
                await client.publish(topic, payload, qos=1, retain=True)
                endpoint.ledger.online = online
                if published is None:
                    self._presence_up(carrier_id)
                elif not self._stopping.is_set():
                    log.info("carrier status", carrier=carrier_id, status=payload.decode())
                published = online
            if self._stopping.is_set():
                return
            changed.clear()
            await changed.wait()

    def _presence_up(self, carrier_id: str) -> None:
        if carrier_id not in self._ever_present:
            self._ever_present.add(carrier_id)
            if len(self._ever_present) == len(self.endpoints):
                self._all_present.set()
        down = self._presence_down
        if carrier_id not in down:
            return
        down.discard(carrier_id)
        if down or self._presence_outage_at is None:
            return
        if self._presence_summary is not None:  # a short outage: say it was lost, first
            self._presence_summary.cancel()
            self._log_presence_lost()
        log.info(
            "presence restored",
            host=self.host_id,
            connections=self._presence_lost,
            outage_s=round(self.clock() - self._presence_outage_at, 1),
        )
        self._presence_lost = 0
        self._presence_outage_at = None

    def _presence_lost_one(self, carrier_id: str) -> None:
        self._presence_down.add(carrier_id)
        self._presence_lost += 1
        if self._presence_outage_at is None:
            self._presence_outage_at = self.clock()
            loop = asyncio.get_running_loop()
            self._presence_summary = loop.call_later(PRESENCE_SUMMARY_S, self._log_presence_lost)

    def _log_presence_lost(self) -> None:
        self._presence_summary = None
        log.warning(
            "presence connections lost; reconnecting with backoff",
            host=self.host_id,
            connections=self._presence_lost,
            carriers=len(self.endpoints),
        )

    def status_changed(self, carrier_id: str) -> None:
        self._status_changed[carrier_id].set()

    # ---- intake -----------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        decode = interconnect.SUBMIT_BATCH.decode
        host_topic = interconnect.host_submit_topic(self.host_id)
        ack_topic = interconnect.host_dlr_ack_topic(self.host_id)
        endpoints = self.endpoints
        journal = self.journal
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload
            if topic == ack_topic:
                self._acks(payload)
                continue
            if self._intake_closed:
                continue
            try:
                # On a carrier's own topic, items without a carrier are for that carrier.
                default = "" if topic == host_topic else interconnect.carrier_of(topic)
                if not isinstance(payload, bytes | bytearray):
                    raise TypeError("payload is not bytes")
                batch = decode(bytes(payload))
            except (ValueError, TypeError, msgspec.DecodeError) as e:
                log.warning("malformed submit dropped", topic=topic, error=str(e))
                continue
            now = self.clock()
            wall_ms = time.time_ns() // 1_000_000
            heap, seq = self._heap, self._seq
            accepted: list[AcceptedItem] = []
            repeats: list[Key] = []
            for item in batch.items:
                carrier_id = item.carrier or default
                endpoint = endpoints.get(carrier_id)
                if endpoint is None:
                    log.warning("submit for a carrier not hosted here dropped",
                                carrier=carrier_id, topic=topic)  # fmt: skip
                    continue
                outcome = endpoint.submit(item, now, wall_ms)
                if outcome is None:
                    continue
                result = outcome.result
                heapq.heappush(
                    heap, _Due(outcome.result_at, next(seq), carrier_id, batch.reply_to, result)
                )
                if outcome.report is not None:
                    heapq.heappush(
                        heap, _Due(outcome.report_at, next(seq), carrier_id, None, outcome.report)
                    )
                if journal is not None and result.accepted:
                    if result.duplicate:
                        repeats.append((carrier_id, item.id))
                    else:
                        accepted.append(
                            AcceptedItem(
                                carrier_id,
                                item.id,
                                result.price,
                                wall_ms + round((outcome.result_at - now) * 1e3),
                                outcome.report,
                                wall_ms + round((outcome.report_at - now) * 1e3),
                            )
                        )
            # journalled before any of these results can be published
            if journal is not None and (accepted or repeats):
                journal.accepted(accepted, repeats)
            self._wake.set()

    def _acks(self, payload: object) -> None:
        try:
            if not isinstance(payload, bytes | bytearray):
                raise TypeError("payload is not bytes")
            batch = interconnect.REPORT_ACK_BATCH.decode(bytes(payload))
        except (TypeError, msgspec.DecodeError) as e:
            log.warning("malformed report acknowledgement dropped", error=str(e))
            return
        released, unknown = self.reports.ack(batch.acks)
        if released and self.journal is not None:
            self.journal.acked(released)
        if unknown:
            log.debug("acks for reports not held here ignored", router=batch.router, acks=unknown)

    # ---- timing and batching ------------------------------------------------------------

    async def _pump(self) -> None:
        heap, batches, reports = self._heap, self._batches, self.reports
        while True:
            now = self.clock()
            if not self._draining:
                for report in reports.due(now):
                    heapq.heappush(heap, _Due(now, next(self._seq), report.carrier, None, report))
            while heap and heap[0].at <= now:
                due = heapq.heappop(heap)
                payload = due.payload
                if isinstance(payload, interconnect.DeliveryReport):
                    if self.endpoints[due.carrier].offline:
                        # an offline carrier holds its reports until it is back
                        due.at = now + OFFLINE_RETRY_S
                        heapq.heappush(heap, due)
                        continue
                    if not reports.take(payload):
                        continue  # acknowledged or given up while it waited
                key = due.reply_to
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
            deadlines = [b.deadline for b in batches.values()]
            if heap:
                deadlines.append(heap[0].at)
            resend_at = reports.next_due()
            if resend_at is not None:
                deadlines.append(resend_at)
            next_at = min(deadlines, default=None)
            self._wake.clear()
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
            await self._queue.put(_Outgoing(topic, payload, reports))
        else:
            results = [r for r in batch.items if isinstance(r, interconnect.SubmitResult)]
            payload = interconnect.RESULT_BATCH.encode(
                interconnect.SubmitResultBatch(self.host_id, results)
            )
            await self._queue.put(_Outgoing(reply_to, payload, []))

    async def _publish(self, client: aiomqtt.Client) -> None:
        queue, retry = self._queue, self._retry
        while True:
            out = retry.popleft() if retry else await queue.get()
            try:
                await client.publish(out.topic, out.payload, qos=1)
            except BaseException:
                retry.appendleft(out)  # published again after the reconnect
                raise
            queue.task_done()
            if out.reports:
                self._reports_published(out.reports)

    def _reports_published(self, reports: list[interconnect.DeliveryReport]) -> None:
        acked, dropped = self.reports.published(reports, self.clock())
        if self.journal is not None:
            self.journal.published(reports, acked, dropped)
        self._wake.set()  # their resend clocks run from now

    # ---- scenario -------------------------------------------------------------------------

    async def _run_scenario(self) -> None:
        assert self.scenario is not None
        start = self.clock()
        endpoints = list(self.endpoints.values())
        for step in scenario_mod.timeline(self.scenario):
            delay = start + step.at - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            changed = scenario_mod.apply(step, endpoints)
            log.info("scenario step", step=step.describe(), at_s=step.at, carriers=len(changed))
            for endpoint in changed:
                self.status_changed(endpoint.id)


async def _until_disconnected(client: aiomqtt.Client) -> NoReturn:
    """Raises MqttError when the connection drops (the client subscribes to nothing)."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("message stream ended")


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until one of the events is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _pause(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``event`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
