"""Kafka for the engine and the tools: clients with supernet's defaults, topic set-up, and
one reader of a topic between offsets.

The engine, the load generator, the demo, the benchmarks and the tests ask this module for
a producer, a consumer, a reader or topics, so that client settings (acks, batching, commit
mode) are chosen in one place. Every client is made from a ``KafkaAccess`` (the bootstrap
servers, and with security on the SCRAM identity and the CA: ``router.support.credentials``);
what it may do is up to that identity's ACLs (``router.tools.infra.kafka_acls``). The other
modules that import aiokafka are ``router.tools.infra.roundtrip``, a smoke test of the bare
broker with plain clients, and ``router.tools.infra.kafka_acls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import ConsumerRecord

from router.support.credentials import KafkaAccess

__all__ = [
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "CommitFailedError",
    "ConsumerRebalanceListener",
    "KafkaConnectionError",
    "KafkaError",
    "KafkaTimeoutError",
    "Reader",
    "Span",
    "TopicPartition",
    "TopicSpec",
    "close_producer",
    "compacted",
    "consumer",
    "end_offsets",
    "ensure_topics",
    "group_clients",
    "let_go",
    "partition_counts",
    "producer",
    "read_between",
    "read_partitions_since",
]


CLOSE_S = 0.5
"""How long closing a client waits for its connections to end. aiokafka's close waits for
each connection's ``connection_lost``; over TLS the event loop first waits for the
broker's close_notify, up to its ``ssl_shutdown_timeout`` of 30 s, and the broker
sometimes never sends it (1 close in 12 on this machine, measured): that was the 30-s
stall of attempts restores seen with security on. Past the bound the rest of the close
goes on in the background (the loop aborts the socket when its own timeout ends)."""


async def let_go(close: Callable[[], Awaitable[object]], limit_s: float = CLOSE_S) -> None:
    """``close()`` an aiokafka client (``stop`` or ``close``), waiting at most ``limit_s``
    for it (``CLOSE_S``). Only for a client with nothing left to send: a producer is
    flushed first (``producer.flush()``), since its ``stop`` sends what is pending."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await close()


async def close_producer(producer: AIOKafkaProducer) -> None:
    """Send what is pending (unbounded, as ``stop`` would), then ``let_go`` of it."""
    await producer.flush()
    await let_go(producer.stop)


MAX_RECORD_BYTES = 8 * 1024 * 1024
"""The largest record supernet's topics take: a producer's garbage, however big, must
still fit into the dead-letter topic unchanged."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    max_record_bytes: int = MAX_RECORD_BYTES
    configs: tuple[tuple[str, str], ...] = ()


def admin_client(access: KafkaAccess) -> AIOKafkaAdminClient:
    """An admin client (for metadata; creating topics and describing groups need the
    ACLs that allow them)."""
    return AIOKafkaAdminClient(**access.client_kwargs(), client_id="supernet-admin")


def compacted(name: str, partitions: int, retention_ms: int) -> TopicSpec:
    """A topic that keeps the latest record per key, and nothing older than retention."""
    return TopicSpec(
        name,
        partitions,
        1024 * 1024,
        (("cleanup.policy", "compact,delete"), ("retention.ms", str(retention_ms))),
    )


def producer(access: KafkaAccess, **overrides: Any) -> AIOKafkaProducer:
    """A producer for records that must not be lost: acks from all replicas, idempotent,
    with a short linger so that many small records share a request."""
    settings: dict[str, Any] = {
        **access.client_kwargs(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": MAX_RECORD_BYTES + 64 * 1024,
        "client_id": "supernet",
    }
    settings.update(overrides)
    return AIOKafkaProducer(**settings)


def consumer(
    access: KafkaAccess, group: str | None, *topics: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer whose offsets the caller commits itself (never auto-commit)."""
    settings: dict[str, Any] = {
        **access.client_kwargs(),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 2000,
        "fetch_max_wait_ms": 20,
        "fetch_min_bytes": 32 * 1024,
        "max_partition_fetch_bytes": MAX_RECORD_BYTES + 64 * 1024,
        "client_id": "supernet",
    }
    settings.update(overrides)
    return AIOKafkaConsumer(*topics, **settings)


async def partition_counts(access: KafkaAccess, topics: Iterable[str]) -> dict[str, int]:
    """Partitions of each of ``topics`` that exists (and ``access`` may describe)."""
    admin = admin_client(access)
    await admin.start()
    try:
        names = [t for t in topics if t in set(await admin.list_topics())]
        if not names:
            return {}
        described = await admin.describe_topics(names)
        return {
            d.get("topic") or d["name"]: len(d["partitions"])
            for d in described
            if not d["error_code"]
        }
    finally:
        await let_go(admin.close)


async def read_partitions_since(
    access: KafkaAccess, tps: Iterable[TopicPartition], since_ms: int, client_id: str,
    phases: dict[str, float] | None = None,
) -> dict[TopicPartition, list[bytes]]:  # fmt: skip
    """Per partition, every value written at or after ``since_ms`` (ms since the epoch),
    up to the partition's end when called. One short-lived consumer per topic, outside any
    group. ``phases``, if given, gets the seconds spent starting the reader (``start``),
    finding the offsets (``offsets``), reading (``read``) and closing it (``close``), summed
    over topics."""
    wanted = list(tps)
    out: dict[TopicPartition, list[bytes]] = {tp: [] for tp in wanted}
    took = phases if phases is not None else {}
    clock = time.monotonic
    for topic in sorted({tp.topic for tp in wanted}):
        partitions = [tp.partition for tp in wanted if tp.topic == topic]
        began = clock()
        async with Reader(access, topic, partitions, client_id) as reader:
            started = clock()
            ends = await reader.end_offsets()
            start = await reader.offsets_at(since_ms)
            found = clock()
            async for batch in reader.records(start, ends):
                values = out[TopicPartition(topic, batch[0].partition)]
                values += [record.value for record in batch if record.value is not None]
            read = clock()
        closed = clock()
        for name, seconds in (("start", started - began), ("offsets", found - started),
                              ("read", read - found), ("close", closed - read)):  # fmt: skip
            took[name] = took.get(name, 0.0) + seconds
    return out


async def ensure_topics(access: KafkaAccess, topics: Iterable[TopicSpec]) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are. On a
    cluster of three brokers or more each has three replicas and needs two in sync for a
    write (with ``acks=all``, a write survives the loss of any one broker); on fewer, as
    many replicas as brokers."""
    admin = admin_client(access)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
        replicas = min(3, brokers)
        durable = {"min.insync.replicas": "2"} if replicas >= 3 else {}
        wanted = [
            NewTopic(
                t.name,
                num_partitions=t.partitions,
                replication_factor=replicas,
                topic_configs={
                    "max.message.bytes": str(t.max_record_bytes),
                    **durable,
                    **dict(t.configs),
                },
            )
            for t in topics
            if t.name not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted)
            for name, code, *_ in response.topic_errors:
                # Another worker may have created it first: that is fine.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise KafkaError(f"could not create topic {name}: error code {code}")
    finally:
        await let_go(admin.close)


async def delete_topics(access: KafkaAccess, names: Iterable[str]) -> None:
    """Delete those of ``names`` that exist (the benchmarks' own topics, after a run)."""
    admin = admin_client(access)
    await admin.start()
    try:
        doomed = sorted(set(names) & set(await admin.list_topics()))
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await let_go(admin.close)


# ---- reading a topic back between offsets --------------------------------------------
# The one reader for every "what is in this topic between here and there": the worker's
# restore of its attempts, the demo's read-back of a run, the tests' checks.


class Reader:
    """One short-lived consumer outside any group, assigned some partitions of one topic
    (default: all that exist when it starts), that reads them between offsets.

    Offsets map a partition to an offset. ``records(start, end)`` yields batches of the
    records at ``start`` (a partition not in it: from its first offset) up to, not
    including, ``end`` (default: the end offsets when called), or with ``follow`` every
    record from ``start`` on as it arrives (the caller stops). A partition is done when the
    consumer's position reaches its end, so gaps (compaction, transaction markers) never
    leave a read waiting for an offset that holds no record."""

    def __init__(
        self,
        access: KafkaAccess,
        topic: str,
        partitions: Iterable[int] | None = None,
        client_id: str = "supernet-reader",
    ) -> None:
        self.topic = topic
        self._access = access
        self._wanted = None if partitions is None else sorted(set(partitions))
        self.tps: list[TopicPartition] = []
        self.consumer = AIOKafkaConsumer(
            **access.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            client_id=client_id,
            max_partition_fetch_bytes=MAX_RECORD_BYTES + 64 * 1024,
            fetch_max_wait_ms=10,
        )

    async def __aenter__(self) -> Reader:
        await self.consumer.start()
        try:
            if self._wanted is None:
                # Not consumer.topics(): it fetches metadata without caching it, so
                # partitions_for_topic would still not know a topic this client never met.
                counts = await partition_counts(self._access, [self.topic])
                self._wanted = list(range(counts.get(self.topic, 0)))
            self.tps = [TopicPartition(self.topic, p) for p in self._wanted]
            if self.tps:
                self.consumer.assign(self.tps)
        except BaseException:
            await let_go(self.consumer.stop)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await let_go(self.consumer.stop)

    async def end_offsets(self) -> dict[int, int]:
        """Per partition, the offset the next record written to it will get."""
        if not self.tps:
            return {}
        ends = await self.consumer.end_offsets(self.tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def offsets_at(self, ms: int) -> dict[int, int]:
        """Per partition, the first offset written at or after ``ms`` (ms since the
        epoch); the end offset where nothing was written since."""
        if not self.tps:
            return {}
        ends = await self.end_offsets()
        found = await self.consumer.offsets_for_times(dict.fromkeys(self.tps, ms))
        return {
            tp.partition: ends[tp.partition] if found[tp] is None else found[tp].offset
            for tp in self.tps
        }

    async def records(
        self,
        start: Mapping[int, int] | None = None,
        end: Mapping[int, int] | None = None,
        *,
        follow: bool = False,
        max_records: int = 20_000,
    ) -> AsyncGenerator[list[ConsumerRecord], None]:
        """Batches of records (each batch of one partition, in offset order)."""
        if not self.tps:
            return
        first = await self.consumer.beginning_offsets(self.tps)
        ends = dict(end) if end is not None else await self.end_offsets()
        todo: set[TopicPartition] = set()
        for tp in self.tps:
            begin = max((start or {}).get(tp.partition, 0), first[tp])
            if follow or begin < ends.get(tp.partition, 0):
                self.consumer.seek(tp, begin)
                todo.add(tp)
        while todo:
            batch = await self.consumer.getmany(*todo, timeout_ms=500, max_records=max_records)
            for tp, got in batch.items():
                kept = got if follow else [r for r in got if r.offset < ends[tp.partition]]
                if kept:
                    yield kept
            if follow:
                continue
            for tp in list(todo):
                if await self.consumer.position(tp) >= ends[tp.partition]:
                    todo.discard(tp)


async def ensure_pipeline(
    access: KafkaAccess,
    requests: str,
    receipts: str,
    dead_letter: str,
    attempts: str,
    partitions: int,
) -> tuple[int, int]:
    """The pipeline's topics, created where missing: the attempts log gets as many
    partitions as the requests topic (request partition p -> attempts partition p) and is
    kept a day (far longer than any dedupe window; compaction keeps the latest per id).
    Returns the partitions of the requests topic and of the attempts log."""
    plain = (requests, receipts, dead_letter)
    await ensure_topics(access, [TopicSpec(t, partitions) for t in plain])
    counts = await partition_counts(access, [requests, attempts])
    have = counts.get(requests, partitions)
    await ensure_topics(access, [compacted(attempts, have, 24 * 3600 * 1000)])
    return have, counts.get(attempts, have)


@dataclass(frozen=True, slots=True)
class Span:
    """What ``read_between`` read: the values, and per partition the offset it read up to."""

    values: list[bytes]
    ends: dict[int, int]


async def read_between(
    access: KafkaAccess,
    topic: str,
    start: Mapping[int, int] | None = None,
    end: Mapping[int, int] | None = None,
    client_id: str = "supernet-reader",
) -> Span:
    """Every record value of ``topic`` from ``start`` (a partition not in it: from its
    first offset) up to ``end`` (default: the end offsets at the time of the call)."""
    async with Reader(access, topic, client_id=client_id) as reader:
        ends = dict(end) if end is not None else await reader.end_offsets()
        values = [
            r.value
            async for batch in reader.records(start, ends)
            for r in batch
            if r.value is not None
        ]
        return Span(values, ends)


async def end_offsets(access: KafkaAccess, topic: str) -> dict[int, int]:
    """Per partition of ``topic``, its end offset now (empty if the topic does not exist)."""
    async with Reader(access, topic, client_id="supernet-offsets") as reader:
        return await reader.end_offsets()


async def group_clients(access: KafkaAccess, group: str) -> tuple[str, list[str]]:
    """A consumer group's state (``Stable`` once every member has its partitions; ``Dead``
    or ``Empty`` without members) and the client ids of its members."""
    admin = admin_client(access)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await let_go(admin.close)
    # DescribeGroups v0 to v3: (error_code, group, state, protocol_type, protocol,
    # members), each member (member_id, client_id, client_host, metadata, assignment).
    error_code, _, state, _, _, members, *_ = response.groups[0]
    if error_code:
        raise KafkaError(f"could not describe consumer group {group}: error code {error_code}")
    return str(state), [str(member[1]) for member in members]
