"""A carrier process's MQTT connections, and their reconnection: the one module of the
simulator that talks to aiomqtt.

Connections (the choice, and why): a carrier's status must turn ``offline`` on its own
topic when its process dies without warning, and only the broker can publish then,
through a last-will. A connection has exactly one will, so one shared connection per
process could only announce the *process* dead, on one topic, and routers would have to
map hosts to carriers. So each process opens:

- one **presence** connection per carrier (`Presence`): keep-alive only, with the will
  ``offline`` (retained, QoS 1) on ``supernet/carrier/<id>/status``; it publishes
  ``online``/``offline`` (retained) as scenarios switch the carrier, and ``offline`` on a
  clean stop. These are idle TCP connections (a keep-alive ping every 30 s): ~1,500 of
  them cost a few MB and ~1,500 file descriptors in this process and in Mosquitto (check
  ``ulimit -n`` for both), and are opened a few dozen at a time;
- one **data** connection for the whole process (`DataConnection`), which carries all the
  traffic: it subscribes to every hosted carrier's submit topic and to the host's
  ``dlr-ack`` topic (handing each message to the ``Intake``), and publishes the
  ``Outbox``'s batches of results and reports, with several QoS 1 publishes in flight.
  Its own will marks the host offline on ``supernet/carriers/host/<host id>/status``.

Reconnection: every connection, data and presence, survives the broker going away. It
reconnects with capped exponential backoff and jitter (``RECONNECT_INITIAL_S`` doubling
to ``RECONNECT_CAP_S``, the one ``router.support.backoff.Backoff``), and on every
(re)connect subscribes again and publishes its retained state again (the data
connection: the directory and the host status; a presence connection: its carrier's
current status), since the broker may have lost it. Batches queued meanwhile wait in the
outbox's bounded publish queue, and a batch whose publish was cut off is published again.
Outages are logged once for the data connection and once, summarised, for all presence
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import NoReturn

import aiomqtt
import structlog

from carriers.endpoint import Endpoint
from carriers.intake import Intake
from carriers.outbox import Outbox
from router.contracts import interconnect
from router.support.backoff import Backoff

log = structlog.get_logger("carriers.connections")

RECONNECT_INITIAL_S = 0.2
RECONNECT_CAP_S = 5.0
PRESENCE_KEEPALIVE_S = 30
CONNECT_CONCURRENCY = 32
# A QoS 1 publish waits for the broker's PUBACK (tens of ms when the loop is busy), so
# the publish rate is bounded by how many are in flight, not by CPU.
PUBLISHERS = 32
SUBSCRIBE_CHUNK = 200
# Presence losses are summarised in one log line this long after the first of an outage.
PRESENCE_SUMMARY_S = 1.0


def reconnect_backoff() -> Backoff:
    """The delays between a connection's attempts to reach the broker again."""
    return Backoff(RECONNECT_INITIAL_S, RECONNECT_CAP_S)


def connection_lost(exc: BaseException) -> bool:
    """True for an MQTT error, or a task group's errors that are all MQTT errors."""
    if isinstance(exc, aiomqtt.MqttError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(connection_lost(e) for e in exc.exceptions)
    return False


# ---- the data connection ------------------------------------------------------------------


class DataConnection:
    """The process's one connection for submits, results, reports and acknowledgements:
    ``run`` connects, serves and reconnects after every loss until ``stop``; ``ready`` is
    set once it has announced the host (after every presence connection came up)."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        intake: Intake,
        outbox: Outbox,
        all_present: asyncio.Event,
        *,
        mqtt_host: str,
        mqtt_port: int,
        host_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.endpoints = endpoints
        self.intake = intake
        self.outbox = outbox
        self.all_present = all_present
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.host_id = host_id
        self.clock = clock
        self.ready = asyncio.Event()  # every carrier online and subscribed (the first time)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Clear the directory, mark the host offline and disconnect; ``run`` then returns."""
        self._stop.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect after every loss until told to stop."""
        backoff = reconnect_backoff()
        lost_at: float | None = None  # start of the current outage
        connected_before = False
        while not self._stop.is_set():
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
                    await self._session(client)
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
            await _pause(self._stop, backoff.delay())

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection's life: subscribe, announce, receive and publish; on ``stop``,
        clear the directory and mark the host offline."""
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
                await first_of(self.all_present, self._stop)
            if not self._stop.is_set():
                await self._announce(client)
            await self._stop.wait()
            for task in tasks:
                task.cancel()
        # An empty retained payload deletes the directory entry.
        await client.publish(interconnect.directory_topic(self.host_id), b"", qos=1, retain=True)
        await client.publish(
            interconnect.host_status_topic(self.host_id), interconnect.OFFLINE, qos=1, retain=True
        )

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Publish (retained) which carriers the host serves and that it is online."""
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

    async def _receive(self, client: aiomqtt.Client) -> None:
        on_message = self.intake.on_message
        async for message in client.messages:
            on_message(message.topic.value, message.payload)

    async def _publish(self, client: aiomqtt.Client) -> None:
        """One publisher: the outbox's batches to the broker, QoS 1."""
        outbox = self.outbox
        while True:
            out = await outbox.next_batch()
            try:
                await client.publish(out.topic, out.payload, qos=1)
            except BaseException:
                outbox.cut_off(out)  # published again after the reconnect
                raise
            outbox.published(out)


# ---- presence (one connection per carrier, for its last-will) -----------------------------


class Presence:
    """Every hosted carrier's presence connection: ``run(carrier_id)`` keeps one up and its
    retained status current until ``stop`` (then it publishes ``offline`` and closes);
    ``all_present`` is set once every carrier has been announced."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        *,
        mqtt_host: str,
        mqtt_port: int,
        host_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.endpoints = endpoints
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.host_id = host_id
        self.clock = clock
        self.all_present = asyncio.Event()
        self._status_changed = {cid: asyncio.Event() for cid in endpoints}
        self._stopping = asyncio.Event()
        self._connect_slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self._ever_present: set[str] = set()
        # presence outages: carriers whose connection is down, losses, since when
        self._down: set[str] = set()
        self._lost = 0
        self._outage_at: float | None = None
        self._summary: asyncio.TimerHandle | None = None

    def status_changed(self, carrier_id: str) -> None:
        """The carrier's status may have changed: publish it if it did."""
        self._status_changed[carrier_id].set()

    def stop(self) -> None:
        """Every presence connection publishes ``offline`` and closes."""
        self._stopping.set()
        for event in self._status_changed.values():
            event.set()

    def close(self) -> None:
        """Forget an outage summary not logged yet."""
        if self._summary is not None:
            self._summary.cancel()

    async def run(self, carrier_id: str) -> None:
        will = aiomqtt.Will(
            interconnect.status_topic(carrier_id), interconnect.OFFLINE, qos=1, retain=True
        )
        backoff = reconnect_backoff()
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
                    self._lost_one(carrier_id)
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
                    self._up(carrier_id)
                elif not self._stopping.is_set():
                    log.info("carrier status", carrier=carrier_id, status=payload.decode())
                published = online
            if self._stopping.is_set():
                return
            changed.clear()
            await changed.wait()

    def _up(self, carrier_id: str) -> None:
        if carrier_id not in self._ever_present:
            self._ever_present.add(carrier_id)
            if len(self._ever_present) == len(self.endpoints):
                self.all_present.set()
        down = self._down
        if carrier_id not in down:
            return
        down.discard(carrier_id)
        if down or self._outage_at is None:
            return
        if self._summary is not None:  # a short outage: say it was lost, first
            self._summary.cancel()
            self._log_lost()
        log.info(
            "presence restored",
            host=self.host_id,
            connections=self._lost,
            outage_s=round(self.clock() - self._outage_at, 1),
        )
        self._lost = 0
        self._outage_at = None

    def _lost_one(self, carrier_id: str) -> None:
        self._down.add(carrier_id)
        self._lost += 1
        if self._outage_at is None:
            self._outage_at = self.clock()
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(PRESENCE_SUMMARY_S, self._log_lost)

    def _log_lost(self) -> None:
        self._summary = None
        log.warning(
            "presence connections lost; reconnecting with backoff",
            host=self.host_id,
            connections=self._lost,
            carriers=len(self.endpoints),
        )


# ---- waits --------------------------------------------------------------------------------


async def _until_disconnected(client: aiomqtt.Client) -> NoReturn:
    """Raises MqttError when the connection drops (the client subscribes to nothing)."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("message stream ended")


async def first_of(*events: asyncio.Event) -> None:
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
