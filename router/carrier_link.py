"""The worker's side of the carrier interconnect: the one router module that talks MQTT.

Submits are batched per carrier process (``protocol.MAX_BATCH`` items or
``FLUSH_INTERVAL_S`` after the first, as the carriers batch theirs), addressed through
the processes' retained directories, and published at QoS 1 with several publishes in
flight; a carrier no directory names yet is addressed on its own topic. Incoming traffic
is dispatched to a ``LinkHandler``:

- submit results on this worker's own reply topic,
- delivery reports of every carrier process through one shared subscription (each report
  reaches one worker of the group),
- carriers' retained ``online``/``offline`` statuses (last-will included),
- carrier processes' retained directories (which carriers each hosts).

If the broker connection drops, ``run`` raises: the worker exits non-zero and its
supervisor restarts it; in-flight requests are read again from Kafka by whoever owns
their partitions then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import aiomqtt
import msgspec
import structlog

from carriers import protocol

log = structlog.get_logger("router.carrier_link")

# QoS 1 publishes in flight at once: each waits for the broker's PUBACK (tens of ms when
# the loop is busy), so the publish rate is bounded by this, not by CPU.
PUBLISHERS = 64


class LinkHandler(Protocol):
    """``carrier`` is the batch's sender: a carrier id, or a carrier process's id when the
    items name their own carriers."""

    def on_published(self, carrier: str, items: Sequence[protocol.SubmitItem]) -> None: ...

    def on_results(self, carrier: str, results: Sequence[protocol.SubmitResult]) -> None: ...

    def on_reports(self, carrier: str, reports: Sequence[protocol.DeliveryReport]) -> None: ...

    def on_status(self, carrier: str, online: bool) -> None: ...


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
        self._buffers: dict[str, list[protocol.SubmitItem]] = {}
        self._flush_handles: dict[str, asyncio.TimerHandle] = {}
        # Unbounded here, bounded by the worker: every batch holds at least one request in
        # flight, and intake pauses at max_in_flight.
        self._queue: asyncio.Queue[tuple[str, list[protocol.SubmitItem], bytes]] = asyncio.Queue()
        self._client: aiomqtt.Client | None = None
        self.ready = asyncio.Event()
        self.malformed = 0

    # -- submitting (called synchronously from the worker's callbacks) ------------------

    def submit(self, carrier: str, item: protocol.SubmitItem) -> None:
        """Queue a submit; ``item.carrier`` must name ``carrier``."""
        host = self.hosts.get(carrier)
        topic = (
            protocol.host_submit_topic(host) if host is not None else protocol.submit_topic(carrier)
        )
        buf = self._buffers.get(topic)
        if buf is None:
            buf = self._buffers[topic] = []
        buf.append(item)
        if len(buf) >= protocol.MAX_BATCH:
            self._flush(topic)
        elif len(buf) == 1:
            loop = asyncio.get_running_loop()
            self._flush_handles[topic] = loop.call_later(
                protocol.FLUSH_INTERVAL_S, self._flush, topic
            )

    def _flush(self, topic: str) -> None:
        handle = self._flush_handles.pop(topic, None)
        if handle is not None:
            handle.cancel()
        items = self._buffers.pop(topic, None)
        if not items:
            return
        payload = protocol.SUBMIT_BATCH.encode(
            protocol.SubmitBatch(carrier="", reply_to=self.reply_to, items=items)
        )
        self._queue.put_nowait((topic, items, payload))

    def on_directory(self, host: str, carriers: Sequence[str]) -> None:
        for carrier in self._hosted.pop(host, []):
            if self.hosts.get(carrier) == host:
                del self.hosts[carrier]
        self._hosted[host] = list(carriers)
        for carrier in carriers:
            self.hosts[carrier] = host

    def flush_all(self) -> None:
        for topic in list(self._buffers):
            self._flush(topic)

    async def drained(self) -> None:
        """Wait until every buffered submit has been published."""
        self.flush_all()
        await self._queue.join()

    # -- the connection -----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, publish and dispatch until cancelled; raises if the broker
        connection is lost."""
        async with aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"router-{self.instance}",
            clean_session=True,
            max_inflight_messages=1000,
            max_queued_incoming_messages=0,
            keepalive=30,
        ) as client:
            self._client = client
            client.pending_calls_threshold = 2 * PUBLISHERS  # we keep this many on purpose
            await client.subscribe(self.reply_to, qos=1)
            await client.subscribe(protocol.dlr_shared_subscription(self.dlr_group), qos=1)
            await client.subscribe(protocol.STATUS_ALL, qos=1)
            await client.subscribe(protocol.DIRECTORY_ALL, qos=1)
            if self.handler is None:
                raise RuntimeError("CarrierLink.handler must be set before run()")
            self.ready.set()
            log.info("carrier link up", broker=f"{self.host}:{self.port}", reply_to=self.reply_to)
            async with asyncio.TaskGroup() as tg:
                for _ in range(PUBLISHERS):
                    tg.create_task(self._publisher(client))
                await self._dispatch(client)

    async def _publisher(self, client: aiomqtt.Client) -> None:
        queue = self._queue
        handler = self.handler
        assert handler is not None
        while True:
            topic, items, payload = await queue.get()
            try:
                await client.publish(topic, payload, qos=1)
                # The broker has the batch: from now on the carrier's answer is awaited.
                handler.on_published("", items)
            finally:
                queue.task_done()

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        handler = self.handler
        assert handler is not None
        reply_to = self.reply_to
        results = protocol.RESULT_BATCH
        reports = protocol.REPORT_BATCH
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
                    handler.on_reports(db.carrier, db.reports)
                elif topic.endswith("/carriers"):
                    host = protocol.host_of(topic)
                    carriers = protocol.DIRECTORY.decode(payload).carriers if payload else []
                    self.on_directory(host, carriers)
                elif topic.startswith(protocol.TOPIC_ROOT + "/") and topic.endswith("/status"):
                    if not payload:
                        continue  # a cleared retained status
                    carrier = protocol.carrier_of(topic)
                    handler.on_status(carrier, protocol.decode_status(payload) == "online")
            except (msgspec.DecodeError, ValueError) as e:
                # A malformed payload from the interconnect is logged and counted, never fatal.
                self.malformed += 1
                log.warning("malformed interconnect payload", topic=topic, error=str(e))
