"""How the demo learns that its processes are ready, and when the outage happened: from
what they publish for every client to see (retained MQTT statuses, the Kafka consumer
group), never from their log files.

- The carriers are ready when their process publishes ``online`` on its host status topic
  (``interconnect.host_status_topic``): it does so once its carriers' statuses and its
  directory are published.
- The outage is the busy carrier's own status (``interconnect.carrier_status_topic``)
  going ``offline`` and back ``online``, as every router sees it.

It connects as one MQTT identity (an ``observer`` may read statuses, nothing else).
- The fleet is ready when the Kafka consumer group is ``Stable`` with every worker of this
  fleet (client id ``supernet-<instance>-w<i>``) among its members: each has its partitions.

Only messages published after the subscription count (retained ones, which an earlier run
may have left, arrive flagged ``retain`` and are ignored), so a status seen here is this
run's.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

import aiomqtt

from router.contracts import interconnect
from router.engine import kafka
from router.support.credentials import KafkaAccess, MqttAccess

GROUP_POLL_S = 0.25  # the group's state is only known by asking the broker


class CarrierWatch:
    """Subscribed to one carrier host's status (and one carrier's) while in use."""

    def __init__(self, access: MqttAccess, host_id: str, carrier: str | None = None) -> None:
        self.client = aiomqtt.Client(**access.client_kwargs())
        self.host_topic = interconnect.host_status_topic(host_id)
        self.carrier_topic = (
            interconnect.carrier_status_topic(host_id, carrier) if carrier else None
        )
        self.host_online = asyncio.Event()
        self.offline_ms: int | None = None  # the carrier's first offline of this run
        self.online_again_ms: int | None = None  # and its first online after that
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CarrierWatch:
        await self.client.__aenter__()
        try:
            topics = [self.host_topic, *([self.carrier_topic] if self.carrier_topic else [])]
            await self.client.subscribe([(topic, 1) for topic in topics])
        except BaseException:
            await self.client.__aexit__(None, None, None)
            raise
        self._task = asyncio.create_task(self._receive())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                await asyncio.wait([self._task])
                if not self._task.cancelled() and (error := self._task.exception()) is not None:
                    raise error  # the subscription broke: the statuses seen are incomplete
        finally:
            await self.client.__aexit__(kind, exc, tb)

    async def _receive(self) -> None:
        async for message in self.client.messages:
            if message.retain or not isinstance(message.payload, bytes):
                continue
            self.seen(str(message.topic), message.payload, time.time_ns() // 1_000_000)

    def seen(self, topic: str, payload: bytes, now_ms: int) -> None:
        """A status published during the run (``now_ms``: when it arrived)."""
        if topic == self.host_topic and payload == interconnect.ONLINE:
            self.host_online.set()
        elif self.carrier_topic is not None and topic == self.carrier_topic:
            if payload == interconnect.OFFLINE and self.offline_ms is None:
                self.offline_ms = now_ms
            elif (
                payload == interconnect.ONLINE
                and self.offline_ms is not None
                and self.online_again_ms is None
            ):
                self.online_again_ms = now_ms


async def fleet_ready(admin: KafkaAccess, group: str, instance: str, workers: int) -> None:
    """Return once ``group`` is stable with each of the fleet's ``workers`` in it."""
    wanted = {f"supernet-{instance}-w{i}" for i in range(workers)}
    while True:
        try:
            state, clients = await kafka.group_clients(admin, group)
        except kafka.KafkaError:  # e.g. the group's coordinator is still loading
            state, clients = "unknown", []
        if state == "Stable" and wanted <= set(clients):
            return
        await asyncio.sleep(GROUP_POLL_S)
