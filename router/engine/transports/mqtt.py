"""The MQTT carrier transport (the simulated super network's interconnect): the one router
module that talks MQTT. It implements ``router.engine.transports.base``; an SMPP or HTTP
carrier transport would be a module beside this one, implementing the same protocols.

``MqttOutbox`` (the pipeline's ``Submitter``) batches submits per carrier process
(``interconnect.MAX_BATCH`` items or ``FLUSH_INTERVAL_S`` after the first, as the carriers
batch theirs), addressed through the processes' retained directories; a submit for a
carrier that no directory names cannot be addressed, so it counts as sent to nobody (its
submit timeout runs, and the message fails over). Delivery-report acknowledgements
(``ack_report``, once the receipts are durable) are batched per carrier process onto its
``dlr-ack`` topic in the same way. Full batches wait in one queue.

``CarrierLink`` (the ``Transport``) publishes the queued batches at QoS 1 with several
publishes in flight and dispatches incoming traffic to its ``TransportHandler``:

- submit results on this worker's own reply topics (one per carrier process); a result
  for a carrier that its sender does not host is dropped and counted (``foreign``);
- delivery reports of every carrier process through one shared subscription (each report
  reaches one worker of the group); a report for a carrier its sender does not host is
  dropped and counted too, and with security on so is one that answers no attempt the
  fleet signed for its sender, or repeats one already written
  (``router.engine.transports.tokens``);
- carrier processes' retained directories (which carriers each hosts), their own
  statuses (the last-will ``offline`` included) and their carriers' statuses. A carrier
  is online while its process names it, is not ``offline`` and has not announced the
  carrier ``offline``; the handler hears each change of that (``on_status``).

The topics name the carrier process that sent each message, and the broker lets each
process publish only on its own (see ``router.contracts.interconnect``), so "its sender"
above is the broker's word, not the payload's.

If the broker connection drops, ``run`` reconnects with ``router.support.backoff.Backoff``
and subscribes again; batches wait in the outbox's queue meanwhile (bounded by the
worker's in-flight limit) and a batch whose publish was cut off is queued again at the
front (the carrier answers a repeated id as a duplicate). A submit's timeout starts only
once the broker has taken it (``on_published``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, TypeVar

import aiomqtt
import msgspec
import structlog

from router.contracts import interconnect
from router.engine.transports.base import TransportHandler
from router.engine.transports.tokens import ReplayGuard
from router.support.backoff import Backoff
from router.support.credentials import MqttAccess

log = structlog.get_logger("router.engine.transports.mqtt")

# QoS 1 publishes in flight at once: each waits for the broker's PUBACK (tens of ms when
# the loop is busy), so the publish rate is bounded by this, not by CPU.
PUBLISHERS = 64
ACK_FLUSH_S = 0.05  # acknowledgements are not latency-critical: fewer, larger batches
RECONNECT_INITIAL_S = 0.2  # the first reconnect delay, doubling per failure in a row
RECONNECT_CAP_S = 5.0

Batch = tuple[str, list[interconnect.SubmitItem], bytes]
"""(topic ("" for submits no process can take), the submits in it (none for
acknowledgements), the encoded payload)"""

UNADDRESSED = ""  # the topic of a batch for carriers that no directory names


class MqttOutbox:
    """Submits and report acknowledgements, batched per carrier process and queued for
    the publishers. Called synchronously from the pipeline's callbacks. ``name`` is the
    router's name on the interconnect (its MQTT identity): its reply topics use it."""

    def __init__(self, name: str, guard: ReplayGuard | None = None) -> None:
        self.name = name
        # With security on: signs every submit for the process it goes to, and learns
        # which reports' receipts are durable (``router.engine.transports.tokens``).
        self.guard = guard
        self.reply_to = interconnect.reply_topic(name)
        self.unaddressed = 0  # submits for carriers that no directory named
        self.hosts: dict[str, str] = {}  # carrier id -> the process hosting it
        self._hosted: dict[str, list[str]] = {}  # process -> its carriers
        # Buffers by destination topic: a process's submit topic, or UNADDRESSED.
        self._buffers: dict[str, list[interconnect.SubmitItem]] = {}
        self._flush_handles: dict[str, asyncio.TimerHandle] = {}
        self._acks: dict[str, list[interconnect.ReportAck]] = {}  # host -> acks to publish
        self._ack_handles: dict[str, asyncio.TimerHandle] = {}
        # Unbounded here, bounded by the worker: every batch holds at least one request in
        # flight (or one report receipt), and intake pauses at max_in_flight.
        self._queue: deque[Batch] = deque()
        self._publishing = 0  # batches taken by a publisher and not yet published
        # Publishers waiting in ``take``, each woken alone: with one Event for all of them,
        # every batch woke all 64 and 63 went back to sleep (77 µs of CPU per batch, most
        # of an idle worker's time). asyncio.Queue wakes one too, but cannot put a cut-off
        # batch back in front.
        self._takers: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()  # set while nothing is queued or being published
        self._idle.set()

    # -- filling (the pipeline's side) ---------------------------------------------------

    def submit(self, carrier: str, item: interconnect.SubmitItem) -> None:
        """Queue a submit; ``item.carrier`` must name ``carrier``."""
        host = self.hosts.get(carrier)
        if host is None:
            self.unaddressed += 1
            topic = UNADDRESSED
        else:
            topic = interconnect.host_submit_topic(host)
            if self.guard is not None:
                item = msgspec.structs.replace(item, token=self.guard.signer.sign(host, item))
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
        if self.guard is not None:
            self.guard.durable(host, carrier, message_id)
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

    def hosted(self, host: str) -> list[str]:
        """The carriers process ``host`` names in its directory."""
        return self._hosted.get(host, [])

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
        payload = interconnect.REPORT_ACK_BATCH.encode(interconnect.ReportAckBatch(self.name, acks))
        self._enqueue((interconnect.host_dlr_ack_topic(host), [], payload))

    def _enqueue(self, batch: Batch) -> None:
        self._queue.append(batch)
        self._idle.clear()
        self._wake_one()

    def _wake_one(self) -> None:
        takers = self._takers
        while takers:
            taker = takers.popleft()
            if not taker.done():
                taker.set_result(None)
                return

    # -- draining (the publishers' side) -------------------------------------------------

    async def take(self) -> Batch:
        """The oldest queued batch, once there is one; ``published`` or ``requeue`` it."""
        queue = self._queue
        while not queue:
            taker = asyncio.get_running_loop().create_future()
            self._takers.append(taker)
            try:
                await taker
            except asyncio.CancelledError:
                if taker.done() and not taker.cancelled():
                    self._wake_one()  # woken for a batch, then cancelled: pass it on
                raise
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
        self._wake_one()

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
_FromCarrier = TypeVar("_FromCarrier", interconnect.SubmitResult, interconnect.DeliveryReport)


class CarrierLink:
    """The connection: publishes the outbox's batches, dispatches what comes in."""

    def __init__(
        self,
        access: MqttAccess,
        instance: str,
        dlr_group: str,
        outbox: MqttOutbox,
        handler: TransportHandler,
        *,
        on_state: Callable[[bool], None] | None = None,
        on_refused: Callable[[str, int], None] | None = None,
        backoff: Backoff | None = None,
        connect: Connect | None = None,
    ) -> None:
        self.access = access
        self.instance = instance
        self.reply_to = outbox.reply_to
        self._results_prefix = outbox.reply_to + "/"
        self.dlr_group = dlr_group
        self.outbox = outbox
        self.handler = handler
        self.on_state = on_state or (lambda up: None)
        self.on_refused = on_refused or (lambda reason, n: None)  # counted in metrics
        self.backoff = backoff or Backoff(RECONNECT_INITIAL_S, RECONNECT_CAP_S)
        self._connect = connect or self._aiomqtt_client
        self._ready = asyncio.Event()  # connected and subscribed
        self.malformed = 0
        self.foreign = 0  # results and reports for carriers their sender does not host
        self.refused: dict[str, int] = {}  # reports refused by the guard, by verdict
        self.connections = 0  # sessions that came up (subscribed)
        # What the carrier processes announced, and the status the handler last heard.
        self._host_online: dict[str, bool] = {}
        self._announced: dict[str, dict[str, bool]] = {}  # host -> carrier -> online
        self._online: dict[str, bool] = {}  # carrier -> as told to the handler

    def _aiomqtt_client(self) -> contextlib.AbstractAsyncContextManager[Client]:
        kw = self.access.client_kwargs()  # with security on, the identity is the client id
        kw.setdefault("identifier", f"router-{self.instance}")
        return aiomqtt.Client(
            **kw,
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
                            broker=self.access.describe())  # fmt: skip
            await asyncio.sleep(self.backoff.delay())

    async def _session(self) -> None:
        async with self._connect() as client:
            client.pending_calls_threshold = 2 * PUBLISHERS  # we keep this many on purpose
            await client.subscribe(interconnect.results_subscription(self.outbox.name), qos=1)
            await client.subscribe(interconnect.dlr_shared_subscription(self.dlr_group), qos=1)
            await client.subscribe(interconnect.DIRECTORY_ALL, qos=1)
            await client.subscribe(interconnect.HOST_STATUS_ALL, qos=1)
            await client.subscribe(interconnect.CARRIER_STATUS_ALL, qos=1)
            if self.connections:
                log.info("carrier link restored", reconnects=self.connections)
            self.connections += 1
            self.handler.on_changed(())
            self._ready.set()
            self.on_state(True)
            log.info("carrier link up", broker=self.access.describe(), reply_to=self.reply_to)
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
                if topic is not UNADDRESSED:
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
            if topic.startswith(self._results_prefix):
                host = interconnect.host_of(topic)
                rb = interconnect.RESULT_BATCH.decode(payload)
                handler.on_results(host, self._hosted_by(host, rb.results))
            elif topic.endswith("/dlr"):
                host = interconnect.host_of(topic)
                db = interconnect.REPORT_BATCH.decode(payload)
                # acks go to the process that sent the batch: the topic names it
                reports = self._hosted_by(host, db.reports)
                if self.outbox.guard is not None:
                    reports = self._admitted(host, reports)
                handler.on_reports(host, reports)
            elif topic.endswith("/carriers"):
                host = interconnect.host_of(topic)
                carriers = interconnect.DIRECTORY.decode(payload).carriers if payload else []
                before = self.outbox.hosted(host)
                self.outbox.on_directory(host, carriers)
                self._statuses_changed([*before, *carriers])
                handler.on_changed(carriers)
            elif topic.endswith("/status"):
                if not payload:
                    return  # a cleared retained status
                online = interconnect.decode_status(payload) == "online"
                host = interconnect.host_of(topic)
                if topic.count("/") == 4:  # the process's own status
                    self._host_online[host] = online
                    self._statuses_changed(self.outbox.hosted(host))
                else:
                    carrier = interconnect.carrier_of(topic)
                    self._announced.setdefault(host, {})[carrier] = online
                    self._statuses_changed([carrier])
        except (msgspec.DecodeError, ValueError) as e:
            # A malformed payload from the interconnect is logged and counted, never fatal.
            self.malformed += 1
            self.on_refused("malformed", 1)
            log.warning("malformed interconnect payload", topic=topic[:200], error=str(e))

    def _hosted_by(self, host: str, items: Sequence[_FromCarrier]) -> Sequence[_FromCarrier]:
        """``items`` whose carrier ``host`` hosts; the others are counted and dropped."""
        hosts = self.outbox.hosts
        if all(hosts.get(item.carrier) == host for item in items):
            return items
        kept = [item for item in items if hosts.get(item.carrier) == host]
        self.foreign += len(items) - len(kept)
        self.on_refused("foreign", len(items) - len(kept))
        log.warning("results or reports for carriers their sender does not host, dropped",
                    host=host, dropped=len(items) - len(kept))  # fmt: skip
        return kept

    def _admitted(
        self, host: str, reports: Sequence[interconnect.DeliveryReport]
    ) -> list[interconnect.DeliveryReport]:
        """The reports that answer a signed attempt and are not repeats; a repeat of a
        report whose receipt is durable is acknowledged again, the rest are counted."""
        guard = self.outbox.guard
        assert guard is not None
        now_ms = time.time_ns() // 1_000_000
        kept = []
        for rep in reports:
            verdict = guard.admit(host, rep, now_ms)
            if verdict == "new":
                kept.append(rep)
                continue
            self.refused[verdict] = self.refused.get(verdict, 0) + 1
            self.on_refused(verdict, 1)
            if verdict == "repeat":
                self.outbox.ack_report(host, rep.carrier, rep.id)
            elif verdict != "pending":
                log.warning("delivery report refused", reason=verdict, host=host,
                            carrier=rep.carrier[:64], id=rep.id[:64])  # fmt: skip
        return kept

    def _statuses_changed(self, carriers: Sequence[str]) -> None:
        """Tell the handler of each carrier whose status (as defined above) changed."""
        hosts, told = self.outbox.hosts, self._online
        for carrier in carriers:
            host = hosts.get(carrier)
            online = (
                host is not None
                and self._host_online.get(host, True)
                and self._announced.get(host, {}).get(carrier, True)
            )
            if told.get(carrier) != online:
                told[carrier] = online
                self.handler.on_status(carrier, online)
