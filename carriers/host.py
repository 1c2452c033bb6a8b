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
  subscribes to every hosted carrier's submit topic and publishes results and reports in
  batches, with several QoS 1 publishes in flight. Its own will marks the host offline
  on ``supernet/carriers/host/<host id>/status``.

Timing: results and reports wait in one heap ordered by due time (bounded by what the
carriers have accepted: throughput cap x report delay); a pump moves due items into
per-topic batches, flushed at ``MAX_BATCH`` items or ``FLUSH_INTERVAL_S`` after the first
item, onto a bounded publish queue. The broker connection is not re-established: if it
drops, the process exits non-zero and its supervisor restarts it (the carriers' wills
have told the routers meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt
import msgspec
import structlog

from carriers import protocol
from carriers import scenario as scenario_mod
from carriers.endpoint import Endpoint
from carriers.ledger import Ledger

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


@dataclass(order=True, slots=True)
class _Due:
    at: float
    seq: int
    carrier: str = field(compare=False)
    reply_to: str | None = field(compare=False)  # None: a delivery report
    payload: protocol.SubmitResult | protocol.DeliveryReport = field(compare=False)


@dataclass(slots=True)
class _Batch:
    deadline: float
    items: list[protocol.SubmitResult | protocol.DeliveryReport]


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
    ) -> None:
        self.endpoints = endpoints
        self.ledger = ledger
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.host_id = host_id
        self.scenario = scenario
        self.clock = clock
        self.ready = asyncio.Event()  # every carrier online and subscribed
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        # One batch per router reply topic (results) and one for every report (None).
        self._batches: dict[str | None, _Batch] = {}
        # (topic, payload, reports per carrier in it): the ledger counts reports when sent
        self._queue: asyncio.Queue[tuple[str, bytes, dict[str, int]]] = asyncio.Queue(PUBLISH_QUEUE)
        self._status_changed = {cid: asyncio.Event() for cid in endpoints}
        self._stopping = asyncio.Event()
        self._draining = False
        self._connect_slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self._presence_up = 0
        self._all_present = asyncio.Event()

    # ---- lifecycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        will = aiomqtt.Will(
            protocol.host_status_topic(self.host_id), protocol.OFFLINE, qos=1, retain=True
        )
        async with (
            aiomqtt.Client(
                self.mqtt_host,
                self.mqtt_port,
                identifier=f"supernet-carriers-{self.host_id}",
                will=will,
                max_inflight_messages=512,
                keepalive=30,
            ) as client,
            asyncio.TaskGroup() as tg,
        ):
            presence = [tg.create_task(self._presence(cid)) for cid in self.endpoints]
            if not presence:
                self._all_present.set()
            topics = [(protocol.host_submit_topic(self.host_id), 1)]
            topics += [(protocol.submit_topic(cid), 1) for cid in self.endpoints]
            for i in range(0, len(topics), SUBSCRIBE_CHUNK):
                await client.subscribe(topics[i : i + SUBSCRIBE_CHUNK])
            receiver = tg.create_task(self._receive(client))
            pump = tg.create_task(self._pump())
            publishers = [tg.create_task(self._publish(client)) for _ in range(PUBLISHERS)]
            await self._all_present.wait()
            directory = protocol.HostDirectory(self.host_id, sorted(self.endpoints))
            await client.publish(
                protocol.directory_topic(self.host_id),
                protocol.DIRECTORY.encode(directory),
                qos=1,
                retain=True,
            )
            await client.publish(
                protocol.host_status_topic(self.host_id), protocol.ONLINE, qos=1, retain=True
            )
            self.ready.set()
            log.info("carriers ready", carriers=len(self.endpoints), host=self.host_id)
            runner = tg.create_task(self._run_scenario()) if self.scenario else None

            await stop.wait()
            log.info("carriers stopping", host=self.host_id)
            receiver.cancel()
            if runner is not None:
                runner.cancel()
            try:
                async with asyncio.timeout(SHUTDOWN_DEADLINE_S):
                    self._draining = True  # flush what is due now, then the pump ends
                    self._wake.set()
                    await pump
                    await self._queue.join()
            except TimeoutError:
                log.warning("shutdown deadline passed; unsent batches dropped")
                pump.cancel()
            for task in publishers:
                task.cancel()
            self._stopping.set()  # presence connections publish offline and close
            for event in self._status_changed.values():
                event.set()
            await asyncio.gather(*presence, return_exceptions=False)
            # An empty retained payload deletes the directory entry.
            await client.publish(protocol.directory_topic(self.host_id), b"", qos=1, retain=True)
            await client.publish(
                protocol.host_status_topic(self.host_id), protocol.OFFLINE, qos=1, retain=True
            )
        pending = sum(c.reports_pending for c in self.ledger.carriers.values())
        log.info("carriers stopped", host=self.host_id, reports_pending=pending)

    # ---- presence (one connection per carrier, for its last-will) -------------------

    async def _presence(self, carrier_id: str) -> None:
        will = aiomqtt.Will(protocol.status_topic(carrier_id), protocol.OFFLINE, qos=1, retain=True)
        async with contextlib.AsyncExitStack() as stack:
            async with self._connect_slots:
                client = await stack.enter_async_context(
                    aiomqtt.Client(
                        self.mqtt_host,
                        self.mqtt_port,
                        identifier=f"supernet-carrier-{carrier_id}-{self.host_id}",
                        will=will,
                        keepalive=PRESENCE_KEEPALIVE_S,
                    )
                )
            await self._announce(client, carrier_id)

    async def _announce(self, client: aiomqtt.Client, carrier_id: str) -> None:
        """Publish the carrier's status whenever it changes; ``offline`` when stopping."""
        topic = protocol.status_topic(carrier_id)
        endpoint = self.endpoints[carrier_id]
        changed = self._status_changed[carrier_id]
        published: bool | None = None
        while True:
            if self._stopping.is_set():
                endpoint.overrides.offline = True
            online = not endpoint.offline
            if online != published:
                payload = protocol.ONLINE if online else protocol.OFFLINE
                await client.publish(topic, payload, qos=1, retain=True)
                endpoint.ledger.online = online
                if published is None:
                    self._presence_up += 1
                    if self._presence_up == len(self.endpoints):
                        self._all_present.set()
                elif not self._stopping.is_set():
                    log.info("carrier status", carrier=carrier_id, status=payload.decode())
                published = online
            if self._stopping.is_set():
                return
            changed.clear()
            await changed.wait()

    def status_changed(self, carrier_id: str) -> None:
        self._status_changed[carrier_id].set()

    # ---- intake -----------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        decode = protocol.SUBMIT_BATCH.decode
        host_topic = protocol.host_submit_topic(self.host_id)
        endpoints = self.endpoints
        async for message in client.messages:
            topic = message.topic.value
            try:
                # On a carrier's own topic, items without a carrier are for that carrier.
                default = "" if topic == host_topic else protocol.carrier_of(topic)
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    raise TypeError("payload is not bytes")
                batch = decode(bytes(payload))
            except (ValueError, TypeError, msgspec.DecodeError) as e:
                log.warning("malformed submit dropped", topic=topic, error=str(e))
                continue
            now = self.clock()
            wall_ms = time.time_ns() // 1_000_000
            heap, seq = self._heap, self._seq
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
                heapq.heappush(
                    heap,
                    _Due(outcome.result_at, next(seq), carrier_id, batch.reply_to, outcome.result),
                )
                if outcome.report is not None:
                    heapq.heappush(
                        heap, _Due(outcome.report_at, next(seq), carrier_id, None, outcome.report)
                    )
            self._wake.set()

    # ---- timing and batching ------------------------------------------------------------

    async def _pump(self) -> None:
        heap, batches = self._heap, self._batches
        while True:
            now = self.clock()
            while heap and heap[0].at <= now:
                due = heapq.heappop(heap)
                if due.reply_to is None and self.endpoints[due.carrier].offline:
                    # an offline carrier holds its reports until it is back
                    due.at = now + OFFLINE_RETRY_S
                    heapq.heappush(heap, due)
                    continue
                key = due.reply_to
                batch = batches.get(key)
                if batch is None:
                    wait = protocol.FLUSH_INTERVAL_S if key is not None else REPORT_FLUSH_S
                    batch = batches[key] = _Batch(now + wait, [])
                batch.items.append(due.payload)
                if len(batch.items) >= protocol.MAX_BATCH:
                    await self._flush(key)
            for key in [k for k, b in batches.items() if b.deadline <= now or self._draining]:
                await self._flush(key)
            if self._draining:
                return
            deadlines = [b.deadline for b in batches.values()]
            if heap:
                deadlines.append(heap[0].at)
            next_at = min(deadlines, default=None)
            self._wake.clear()
            timeout = None if next_at is None else max(0.0, next_at - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _flush(self, reply_to: str | None) -> None:
        batch = self._batches.pop(reply_to)
        if reply_to is None:
            reports = [r for r in batch.items if isinstance(r, protocol.DeliveryReport)]
            counts: dict[str, int] = {}
            for r in reports:
                counts[r.carrier] = counts.get(r.carrier, 0) + 1
            payload = protocol.REPORT_BATCH.encode(
                protocol.DeliveryReportBatch(self.host_id, reports)
            )
            await self._queue.put((protocol.host_dlr_topic(self.host_id), payload, counts))
        else:
            results = [r for r in batch.items if isinstance(r, protocol.SubmitResult)]
            payload = protocol.RESULT_BATCH.encode(
                protocol.SubmitResultBatch(self.host_id, results)
            )
            await self._queue.put((reply_to, payload, {}))

    async def _publish(self, client: aiomqtt.Client) -> None:
        queue = self._queue
        ledger = self.ledger
        while True:
            topic, payload, reports = await queue.get()
            try:
                await client.publish(topic, payload, qos=1)
                for carrier_id, n in reports.items():
                    ledger[carrier_id].reports_sent += n
            finally:
                queue.task_done()

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
