"""The worker's side of the carrier interconnect: the one router module that talks MQTT.

Submits are batched per carrier process (``interconnect.MAX_BATCH`` items or
``FLUSH_INTERVAL_S`` after the first, as the carriers batch theirs), addressed through
the processes' retained directories, and published at QoS 1 with several publishes in
flight; a carrier no directory names yet is addressed on its own topic. Incoming traffic
is dispatched to a ``LinkHandler``:

- submit results on this worker's own reply topic,
- delivery reports of every carrier process through one shared subscription (each report
  reaches one worker of the group),
- carriers' retained ``online``/``offline`` statuses (last-will included),
- carrier processes' retained directories (which carriers each hosts).

Delivery reports are acknowledged (``ack_report``) once their receipts are durable:
acks are batched per carrier process onto its ``dlr-ack`` topic, like submits.

If the broker connection drops, ``run`` reconnects with capped exponential backoff and
subscribes again; submits and acks wait in their queues meanwhile (bounded by the
worker's in-flight limit) and a batch whose publish was cut off is published again (the
carrier answers a repeated id as a duplicate). A submit's timeout starts only once the
broker has taken it (``on_published``).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import aiomqtt
import msgspec
import structlog

from router.contracts import interconnect

log = structlog.get_logger("router.engine.transports.mqtt")

# QoS 1 publishes in flight at once: each waits for the broker's PUBACK (tens of ms when
# the loop is busy), so the publish rate is bounded by this, not by CPU.
PUBLISHERS = 64
ACK_FLUSH_S = 0.05  # acknowledgements are not latency-critical: fewer, larger batches
RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # backoff steps (with jitter), the last repeated


class LinkHandler(Protocol):
    """``carrier`` is the batch's sender: a carrier id, or a carrier process's id when the
    items name their own carriers."""

    def on_published(self, carrier: str, items: Sequence[interconnect.SubmitItem]) -> None: ...

    def on_results(self, carrier: str, results: Sequence[interconnect.SubmitResult]) -> None: ...

    def on_reports(self, carrier: str, reports: Sequence[interconnect.DeliveryReport]) -> None: ...

    def on_status(self, carrier: str, online: bool) -> None: ...

    def on_changed(self, carriers: Sequence[str]) -> None:
        """These carriers' host (re)announced itself, or the link itself reconnected
        (``carriers`` empty): a submit asked before may never have reached them."""


def reply_topic(instance: str) -> str:
    return f"supernet/router/{instance}/results"


class CarrierLink:
    def __init__(
        self,
        host: str,
        port: int,
        instance: str,
        dlr_group: str,
        handler: LinkHandler | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.instance = instance
        self.reply_to = reply_topic(instance)
        self.dlr_group = dlr_group
        self.handler = handler
        self.hosts: dict[str, str] = {}  # carrier id -> the process hosting it
        self._hosted: dict[str, list[str]] = {}  # process -> its carriers
        # Buffers by destination topic: a process's submit topic, or a carrier's own.
        self._buffers: dict[str, list[interconnect.SubmitItem]] = {}
        self._flush_handles: dict[str, asyncio.TimerHandle] = {}
        # Unbounded here, bounded by the worker: every batch holds at least one request in
        # flight (or one report receipt), and intake pauses at max_in_flight.
        self._queue: deque[tuple[str, list[interconnect.SubmitItem], bytes]] = deque()
        self._queued = asyncio.Event()
        self._acks: dict[str, list[interconnect.ReportAck]] = {}  # host -> acks to publish
        self._ack_handles: dict[str, asyncio.TimerHandle] = {}
        self._client: aiomqtt.Client | None = None
        self.on_state = on_state or (lambda up: None)
        self.ready = asyncio.Event()  # connected and subscribed
        self.malformed = 0
        self.reconnects = 0
        self._was_up = False

    # -- submitting (called synchronously from the worker's callbacks) ------------------

    def submit(self, carrier: str, item: interconnect.SubmitItem) -> None:
        """Queue a submit; ``item.carrier`` must name ``carrier``."""
        host = self.hosts.get(carrier)
        topic = (
            interconnect.host_submit_topic(host)
            if host is not None
            else interconnect.submit_topic(carrier)
        )
        buf = self._buffers.get(topic)
        if buf is None:
            buf = self._buffers[topic] = []
        buf.append(item)
        if len(buf) >= interconnect.MAX_BATCH:
            self._flush(topic)
        elif len(buf) == 1:
            loop = asyncio.get_running_loop()
            self._flush_handles[topic] = loop.call_later(
                interconnect.FLUSH_INTERVAL_S, self._flush, topic
            )

    def _flush(self, topic: str) -> None:
        handle = self._flush_handles.pop(topic, None)
        if handle is not None:
            handle.cancel()
        items = self._buffers.pop(topic, None)
        if not items:
            return
        payload = interconnect.SUBMIT_BATCH.encode(
            interconnect.SubmitBatch(carrier="", reply_to=self.reply_to, items=items)
        )
        self._queue.append((topic, items, payload))
        self._queued.set()

    def ack_report(self, host: str, carrier: str, message_id: str) -> None:
        """Acknowledge a delivery report to carrier process ``host`` (its receipt is
        durable); published in batches."""
        acks = self._acks.get(host)
        if acks is None:
            acks = self._acks[host] = []
            loop = asyncio.get_running_loop()
            self._ack_handles[host] = loop.call_later(ACK_FLUSH_S, self._flush_acks, host)
        acks.append(interconnect.ReportAck(message_id, carrier))
        if len(acks) >= interconnect.MAX_BATCH * 4:
            self._flush_acks(host)

    def _flush_acks(self, host: str) -> None:
        handle = self._ack_handles.pop(host, None)
        if handle is not None:
            handle.cancel()
        acks = self._acks.pop(host, None)
        if not acks:
            return
        payload = interconnect.REPORT_ACK_BATCH.encode(
            interconnect.ReportAckBatch(self.instance, acks)
        )
        self._queue.append((interconnect.host_dlr_ack_topic(host), [], payload))
        self._queued.set()

    def on_directory(self, host: str, carriers: Sequence[str]) -> None:
        for carrier in self._hosted.pop(host, []):
            if self.hosts.get(carrier) == host:
                del self.hosts[carrier]
        self._hosted[host] = list(carriers)
        for carrier in carriers:
            self.hosts[carrier] = host
        if self.handler is not None:
            self.handler.on_changed(carriers)

    def flush_all(self) -> None:
        for topic in list(self._buffers):
            self._flush(topic)
        for host in list(self._acks):
            self._flush_acks(host)

    @property
    def queued(self) -> int:
        """Batches waiting to be published (submits and acknowledgements)."""
        return len(self._queue)

    # -- the connection -----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, publish and dispatch until cancelled, reconnecting with
        backoff whenever the broker connection is lost."""
        if self.handler is None:
            raise RuntimeError("CarrierLink.handler must be set before run()")
        failures = 0
        while True:
            error: BaseException | None = None
            try:
                await self._connected()
            except* (aiomqtt.MqttError, OSError) as group:
                error = group.exceptions[0]
            self.ready.clear()
            self.on_state(False)
            if self._client is not None and error is not None and failures == 0:
                log.warning("carrier link lost; reconnecting", error=str(error),
                            broker=f"{self.host}:{self.port}")  # fmt: skip
            self._client = None
            # Back off from the second failure in a row on; an up connection resets it.
            delay = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)] * random.uniform(0.8, 1.2)
            failures = 0 if self._was_up else failures + 1
            self._was_up = False
            await asyncio.sleep(delay)

    async def _connected(self) -> None:
        async with aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"router-{self.instance}",
            clean_session=True,
            max_inflight_messages=1000,
            max_queued_incoming_messages=0,
            keepalive=10,
        ) as client:
            self._client = client
            client.pending_calls_threshold = 2 * PUBLISHERS  # we keep this many on purpose
            await client.subscribe(self.reply_to, qos=1)
            await client.subscribe(interconnect.dlr_shared_subscription(self.dlr_group), qos=1)
            await client.subscribe(interconnect.STATUS_ALL, qos=1)
            await client.subscribe(interconnect.DIRECTORY_ALL, qos=1)
            if self.reconnects:
                log.info("carrier link restored", reconnects=self.reconnects)
            self.reconnects += 1
            self._was_up = True
            if self.handler is not None:
                self.handler.on_changed(())
            self.ready.set()
            self.on_state(True)
            log.info("carrier link up", broker=f"{self.host}:{self.port}", reply_to=self.reply_to)
            async with asyncio.TaskGroup() as tg:
                for _ in range(PUBLISHERS):
                    tg.create_task(self._publisher(client))
                await self._dispatch(client)
            raise aiomqtt.MqttError("the broker ended the message stream")

    async def _publisher(self, client: aiomqtt.Client) -> None:
        queue = self._queue
        handler = self.handler
        assert handler is not None
        while True:
            while not queue:
                self._queued.clear()
                await self._queued.wait()
            batch = queue.popleft()
            topic, items, payload = batch
            try:
                await client.publish(topic, payload, qos=1)
            except BaseException:
                # Cut off (connection lost, or cancelled with it): publish it again once
                # reconnected; the carrier answers a repeated id as a duplicate.
                queue.appendleft(batch)
                self._queued.set()
                raise
            if items:
                # The broker has the batch: from now on the carrier's answer is awaited.
                handler.on_published("", items)

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        handler = self.handler
        assert handler is not None
        reply_to = self.reply_to
        results = interconnect.RESULT_BATCH
        reports = interconnect.REPORT_BATCH
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload
            if not isinstance(payload, bytes):
                continue
            try:
                if topic == reply_to:
                    rb = results.decode(payload)
                    handler.on_results(rb.carrier, rb.results)
                elif topic.endswith("/dlr"):
                    db = reports.decode(payload)
                    # acks go to the process that sent the batch: the topic names it
                    handler.on_reports(interconnect.host_of(topic), db.reports)
                elif topic.endswith("/carriers"):
                    host = interconnect.host_of(topic)
                    carriers = interconnect.DIRECTORY.decode(payload).carriers if payload else []
                    self.on_directory(host, carriers)
                elif topic.startswith(interconnect.TOPIC_ROOT + "/") and topic.endswith("/status"):
                    if not payload:
                        continue  # a cleared retained status
                    carrier = interconnect.carrier_of(topic)
                    handler.on_status(carrier, interconnect.decode_status(payload) == "online")
            except (msgspec.DecodeError, ValueError) as e:
                # A malformed payload from the interconnect is logged and counted, never fatal.
                self.malformed += 1
                log.warning("malformed interconnect payload", topic=topic, error=str(e))
