"""A carrier process's MQTT connection, and its reconnection: the one module of the
simulator that talks to aiomqtt.

One connection per process (`HostConnection`), which is one MQTT identity: with security
on, Mosquitto makes the username the client id and lets the process publish only on its
own host topics (``router.contracts.interconnect``), so its id (``host_id``) is its
username. It

- subscribes to the host's submit and ``dlr-ack`` topics (handing each message to the
  ``Intake``), and publishes the ``Outbox``'s batches of results and reports, with several
  QoS 1 publishes in flight;
- announces, retained: every hosted carrier's status
  (``supernet/carriers/host/<host>/carrier/<id>/status``, again whenever a scenario
  switches a carrier), the directory of its carriers, and the process's own ``online``.
  Its last-will is the process's ``offline``: routers count every carrier of a process
  offline while the process is, so a process killed without warning takes its carriers
  offline at once, through the one will.

Reconnection: the connection survives the broker going away. It reconnects with capped
exponential backoff and jitter (``RECONNECT_INITIAL_S`` doubling to ``RECONNECT_CAP_S``,
the one ``router.support.backoff.Backoff``), and on every (re)connect subscribes again
and announces again, since the broker may have lost its retained state. Batches queued
meanwhile wait in the outbox's bounded publish queue, and a batch whose publish was cut
off is published again. An outage is logged once, with its length when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiomqtt
import structlog

from carriers.endpoint import Endpoint
from carriers.intake import Intake
from carriers.outbox import Outbox
from router.contracts import interconnect
from router.support.backoff import Backoff
from router.support.credentials import MqttAccess

log = structlog.get_logger("carriers.connections")

RECONNECT_INITIAL_S = 0.2
RECONNECT_CAP_S = 5.0
# A QoS 1 publish waits for the broker's PUBACK (tens of ms when the loop is busy), so
# the publish rate is bounded by how many are in flight, not by CPU.
PUBLISHERS = 32
STATUS_CHUNK = 256  # carrier statuses published at once (within max_inflight_messages)


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


# ---- the connection ---------------------------------------------------------------------


class HostConnection:
    """The process's one connection: ``run`` connects, serves and reconnects after every
    loss until ``stop``; ``ready`` is set once it has announced the host the first time."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        intake: Intake,
        outbox: Outbox,
        *,
        access: MqttAccess,
        host_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.endpoints = endpoints
        self.intake = intake
        self.outbox = outbox
        self.access = access
        self.host_id = host_id
        self.clock = clock
        self.ready = asyncio.Event()  # announced (the first time)
        self._stop = asyncio.Event()
        self._status_changed = asyncio.Event()
        self._published: dict[str, bool] = {}  # carrier -> online, as last published

    def stop(self) -> None:
        """Clear the directory, mark the host offline and disconnect; ``run`` then returns."""
        self._stop.set()

    def status_changed(self) -> None:
        """Some carrier's status may have changed: publish those that did."""
        self._status_changed.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect after every loss until told to stop."""
        backoff = reconnect_backoff()
        lost_at: float | None = None  # start of the current outage
        connected_before = False
        while not self._stop.is_set():
            kw = self.access.client_kwargs()  # with security on, the identity is the client id
            kw.setdefault("identifier", f"supernet-carriers-{self.host_id}")
            client = aiomqtt.Client(
                **kw,
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
                        broker=self.access.describe(),
                        error=_describe(e),
                    )
            await _pause(self._stop, backoff.delay())

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection's life: subscribe, announce, receive and publish; on ``stop``,
        clear the directory and mark the host offline."""
        await client.subscribe(
            [
                (interconnect.host_submit_topic(self.host_id), 1),
                (interconnect.host_dlr_ack_topic(self.host_id), 1),
            ]
        )
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._receive(client))]
            tasks += [tg.create_task(self._publish(client)) for _ in range(PUBLISHERS)]
            await self._announce(client)
            tasks.append(tg.create_task(self._statuses(client)))
            await self._stop.wait()
            for task in tasks:
                task.cancel()
        # An empty retained payload deletes the directory entry.
        await client.publish(interconnect.directory_topic(self.host_id), b"", qos=1, retain=True)
        await client.publish(
            interconnect.host_status_topic(self.host_id), interconnect.OFFLINE, qos=1, retain=True
        )

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Publish (retained) every carrier's status, which carriers the host serves, and
        that it is online."""
        self._published = {}  # a new session: the broker may have lost them all
        await self._publish_statuses(client)
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

    async def _statuses(self, client: aiomqtt.Client) -> None:
        """Publish carriers' statuses as scenarios switch them."""
        while True:
            await self._status_changed.wait()
            self._status_changed.clear()
            await self._publish_statuses(client)

    async def _publish_statuses(self, client: aiomqtt.Client) -> None:
        """Every carrier whose status differs from the one last published on this
        connection, published (retained); many publishes in flight at once."""
        published = self._published
        changed = [e for cid, e in self.endpoints.items() if published.get(cid) != (not e.offline)]
        for i in range(0, len(changed), STATUS_CHUNK):
            chunk = changed[i : i + STATUS_CHUNK]
            await asyncio.gather(*(self._publish_status(client, e) for e in chunk))

    async def _publish_status(self, client: aiomqtt.Client, endpoint: Endpoint) -> None:
        online = not endpoint.offline
        await client.publish(
            interconnect.carrier_status_topic(self.host_id, endpoint.id),
            interconnect.ONLINE if online else interconnect.OFFLINE,
            qos=1,
            retain=True,
        )
        first = endpoint.id not in self._published
        self._published[endpoint.id] = online
        endpoint.ledger.online = online
        if not first:
            log.info(
                "carrier status", carrier=endpoint.id, status="online" if online else "offline"
            )

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


# ---- waits --------------------------------------------------------------------------------


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
