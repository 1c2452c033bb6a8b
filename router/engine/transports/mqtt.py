"""The MQTT carrier transport (the simulated super network's interconnect): the one router
module that talks MQTT. It implements ``router.engine.transports.base``; an SMPP or HTTP
carrier transport would be a module beside this one, implementing the same protocols.

``MqttOutbox`` (the pipeline's ``Submitter``) batches submits per carrier process
(``interconnect.MAX_BATCH`` items or ``FLUSH_INTERVAL_S`` after the first, as the carriers
batch theirs), addressed through the processes' retained directories; a carrier no
directory names yet is addressed on its own topic. Delivery-report acknowledgements
(``ack_report``, once the receipts are durable) are batched per carrier process onto its
``dlr-ack`` topic in the same way. Full batches wait in one queue.

``CarrierLink`` (the ``Transport``) publishes the queued batches at QoS 1 with several
publishes in flight and dispatches incoming traffic to its ``TransportHandler``:

- submit results on this worker's own reply topic,
- delivery reports of every carrier process through one shared subscription (each report
  reaches one worker of the group),
- carriers' retained ``online``/``offline`` statuses (last-will included),
- carrier processes' retained directories (which carriers each hosts).

If the broker connection drops, ``run`` reconnects with ``router.support.backoff.Backoff``
and subscribes again; batches wait in the outbox's queue meanwhile (bounded by the
worker's in-flight limit) and a batch whose publish was cut off is queued again at the
front (the carrier answers a repeated id as a duplicate). A submit's timeout starts only
once the broker has taken it (``on_published``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import aiomqtt
import msgspec
import structlog

from router.contracts import interconnect
from router.engine.transports.base import TransportHandler
from router.support.backoff import Backoff

log = structlog.get_logger("router.engine.transports.mqtt")

# QoS 1 publishes in flight at once: each waits for the broker's PUBACK (tens of ms when
# the loop is busy), so the publish rate is bounded by this, not by CPU.
PUBLISHERS = 64
ACK_FLUSH_S = 0.05  # acknowledgements are not latency-critical: fewer, larger batches
RECONNECT_INITIAL_S = 0.2  # the first reconnect delay, doubling per failure in a row
RECONNECT_CAP_S = 5.0

Batch = tuple[str, list[interconnect.SubmitItem], bytes]
"""(topic, the submits in it (none for acknowledgements), the encoded payload)"""


def reply_topic(instance: str) -> str:
    return f"supernet/router/{instance}/results"


class MqttOutbox:
    """Submits and report acknowledgements, batched per carrier process and queued for
    the publishers. Called synchronously from the pipeline's callbacks."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.reply_to = reply_topic(instance)
        self.hosts: dict[str, str] = {}  # carrier id -> the process hosting it
        self._hosted: dict[str, list[str]] = {}  # process -> its carriers
        # Buffers by destination topic: a process's submit topic, or a carrier's own.
        self._buffers: dict[str, list[interconnect.SubmitItem]] = {}
        self._flush_handles: dict[str, asyncio.TimerHandle] = {}
        self._acks: dict[str, list[interconnect.ReportAck]] = {}  # host -> acks to publish
        self._ack_handles: dict[str, asyncio.TimerHandle] = {}
        # Unbounded here, bounded by the worker: every batch holds at least one request in
        # flight (or one report receipt), and intake pauses at max_in_flight.
        self._queue: deque[Batch] = deque()
        self._publishing = 0  # batches taken by a publisher and not yet published
        self._queued = asyncio.Event()  # set while the queue holds a batch
        self._idle = asyncio.Event()  # set while nothing is queued or being published
        self._idle.set()

    # -- filling (the pipeline's side) ---------------------------------------------------

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

    def flush(self) -> None:
        """Queue every batch still being filled, without waiting for its timer."""
        for topic in list(self._buffers):
            self._flush(topic)
        for host in list(self._acks):
            self._flush_acks(host)

    def on_directory(self, host: str, carriers: Sequence[str]) -> None:
        """Carrier process ``host`` hosts ``carriers`` now (and no others)."""
        for carrier in self._hosted.pop(host, []):
            if self.hosts.get(carrier) == host:
                del self.hosts[carrier]
        self._hosted[host] = list(carriers)
        for carrier in carriers:
            self.hosts[carrier] = host

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
        self._enqueue((topic, items, payload))

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
        self._enqueue((interconnect.host_dlr_ack_topic(host), [], payload))

    def _enqueue(self, batch: Batch) -> None:
        self._queue.append(batch)
        self._queued.set()
        self._idle.clear()

    # -- draining (the publishers' side) -------------------------------------------------

    async def take(self) -> Batch:
        """The oldest queued batch, once there is one; ``published`` or ``requeue`` it."""
        queue = self._queue
        while not queue:
            self._queued.clear()
            await self._queued.wait()
        self._publishing += 1
        return queue.popleft()

    def published(self) -> None:
        """A batch from ``take`` is with the broker."""
        self._publishing -= 1
        self._settle()

    def requeue(self, batch: Batch) -> None:
        """A batch from ``take`` was cut off: it goes first again."""
        self._publishing -= 1
        self._queue.appendleft(batch)
        self._queued.set()

    def _settle(self) -> None:
        if not self._queue and not self._publishing:
            self._idle.set()

    @property
    def queued(self) -> int:
        """Batches not yet with the broker: queued, or being published."""
        return len(self._queue) + self._publishing

    async def wait_idle(self) -> None:
        await self._idle.wait()


class Client(Protocol):
    """The part of ``aiomqtt.Client`` the link uses (a seam for tests)."""

    pending_calls_threshold: int

    async def subscribe(self, topic: str, qos: int = 0) -> object: ...

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None: ...

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]: ...


Connect = Callable[[], contextlib.AbstractAsyncContextManager[Client]]


class CarrierLink:
    """The connection: publishes the outbox's batches, dispatches what comes in."""

    def __init__(
        self,
        host: str,
        port: int,
        instance: str,
        dlr_group: str,
        outbox: MqttOutbox,
        handler: TransportHandler,
        *,
        on_state: Callable[[bool], None] | None = None,
        backoff: Backoff | None = None,
        connect: Connect | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.instance = instance
        self.reply_to = outbox.reply_to
        self.dlr_group = dlr_group
        self.outbox = outbox
        self.handler = handler
        self.on_state = on_state or (lambda up: None)
        self.backoff = backoff or Backoff(RECONNECT_INITIAL_S, RECONNECT_CAP_S)
        self._connect = connect or self._aiomqtt_client
        self._ready = asyncio.Event()  # connected and subscribed
        self.malformed = 0
        self.connections = 0  # sessions that came up (subscribed)

    def _aiomqtt_client(self) -> contextlib.AbstractAsyncContextManager[Client]:
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"router-{self.instance}",
            clean_session=True,
            max_inflight_messages=1000,
            max_queued_incoming_messages=0,
            keepalive=10,
        )

    # -- the Transport surface -----------------------------------------------------------

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def flush(self) -> None:
        self.outbox.flush()

    @property
    def queued(self) -> int:
        return self.outbox.queued

    async def wait_idle(self) -> None:
        await self.outbox.wait_idle()

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, publish and dispatch until cancelled, reconnecting with
        backoff whenever the broker connection is lost."""
        while True:
            was_up = self.connections
            error: BaseException | None = None
            try:
                await self._session()
            except* (aiomqtt.MqttError, OSError) as group:
                error = group.exceptions[0]
            self._ready.clear()
            self.on_state(False)
            up = self.connections > was_up
            if up:
                # A session that came up resets the backoff: the first loss is retried soon.
                self.backoff.reset()
                log.warning("carrier link lost; reconnecting", error=str(error),
                            broker=f"{self.host}:{self.port}")  # fmt: skip
            await asyncio.sleep(self.backoff.delay())

    async def _session(self) -> None:
        async with self._connect() as client:
            client.pending_calls_threshold = 2 * PUBLISHERS  # we keep this many on purpose
            await client.subscribe(self.reply_to, qos=1)
            await client.subscribe(interconnect.dlr_shared_subscription(self.dlr_group), qos=1)
            await client.subscribe(interconnect.STATUS_ALL, qos=1)
            await client.subscribe(interconnect.DIRECTORY_ALL, qos=1)
            if self.connections:
                log.info("carrier link restored", reconnects=self.connections)
            self.connections += 1
            self.handler.on_changed(())
            self._ready.set()
            self.on_state(True)
            log.info("carrier link up", broker=f"{self.host}:{self.port}", reply_to=self.reply_to)
            async with asyncio.TaskGroup() as tg:
                for _ in range(PUBLISHERS):
                    tg.create_task(self._publisher(client))
                await self._dispatch(client)
            raise aiomqtt.MqttError("the broker ended the message stream")

    async def _publisher(self, client: Client) -> None:
        outbox = self.outbox
        handler = self.handler
        while True:
            batch = await outbox.take()
            topic, items, payload = batch
            try:
                await client.publish(topic, payload, qos=1)
            except BaseException:
                # Cut off (connection lost, or cancelled with it): publish it again once
                # reconnected; the carrier answers a repeated id as a duplicate.
                outbox.requeue(batch)
                raise
            outbox.published()
            if items:
                # The broker has the batch: from now on the carrier's answer is awaited.
                handler.on_published("", items)

    async def _dispatch(self, client: Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes):
                self.deliver(message.topic.value, payload)

    def deliver(self, topic: str, payload: bytes) -> None:
        """One incoming message, to the handler; a malformed one is counted and logged."""
        handler = self.handler
        try:
            if topic == self.reply_to:
                rb = interconnect.RESULT_BATCH.decode(payload)
                handler.on_results(rb.carrier, rb.results)
            elif topic.endswith("/dlr"):
                db = interconnect.REPORT_BATCH.decode(payload)
                # acks go to the process that sent the batch: the topic names it
                handler.on_reports(interconnect.host_of(topic), db.reports)
            elif topic.endswith("/carriers"):
                host = interconnect.host_of(topic)
                carriers = interconnect.DIRECTORY.decode(payload).carriers if payload else []
                self.outbox.on_directory(host, carriers)
                handler.on_changed(carriers)
            elif topic.startswith(interconnect.TOPIC_ROOT + "/") and topic.endswith("/status"):
                if not payload:
                    return  # a cleared retained status
                carrier = interconnect.carrier_of(topic)
                handler.on_status(carrier, interconnect.decode_status(payload) == "online")
        except (msgspec.DecodeError, ValueError) as e:
            # A malformed payload from the interconnect is logged and counted, never fatal.
            self.malformed += 1
            log.warning("malformed interconnect payload", topic=topic, error=str(e))
