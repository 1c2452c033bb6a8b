"""The one module that talks to aiokafka: clients with supernet's defaults, topic set-up.

Everything else asks this module for a producer, a consumer or topics, so that client
settings (acks, batching, commit mode) are chosen in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
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

__all__ = [
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "CommitFailedError",
    "ConsumerRebalanceListener",
    "KafkaConnectionError",
    "KafkaError",
    "KafkaTimeoutError",
    "TopicPartition",
    "TopicSpec",
    "compacted",
    "consumer",
    "ensure_topics",
    "partition_counts",
    "producer",
    "read_partitions_since",
]


MAX_RECORD_BYTES = 8 * 1024 * 1024
"""The largest record supernet's topics take: a producer's garbage, however big, must
still fit into the dead-letter topic unchanged."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    max_record_bytes: int = MAX_RECORD_BYTES
    configs: tuple[tuple[str, str], ...] = ()


def compacted(name: str, partitions: int, retention_ms: int) -> TopicSpec:
    """A topic that keeps the latest record per key, and nothing older than retention."""
    return TopicSpec(
        name,
        partitions,
        1024 * 1024,
        (("cleanup.policy", "compact,delete"), ("retention.ms", str(retention_ms))),
    )


def producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """A producer for records that must not be lost: acks from all replicas, idempotent,
    with a short linger so that many small records share a request."""
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": MAX_RECORD_BYTES + 64 * 1024,
        "client_id": "supernet",
    }
    settings.update(overrides)
    return AIOKafkaProducer(**settings)


def consumer(bootstrap: str, group: str | None, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer whose offsets the caller commits itself (never auto-commit)."""
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
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


async def partition_counts(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """Partitions of each of ``topics`` that exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="supernet-admin")
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
        await admin.close()


async def read_partitions_since(
    bootstrap: str, tps: Iterable[TopicPartition], since_ms: int, client_id: str
) -> dict[TopicPartition, list[bytes]]:
    """Per partition, every value written at or after ``since_ms`` (ms since the epoch),
    up to the partition's end when called. One short-lived consumer outside any group."""
    wanted = list(tps)
    out: dict[TopicPartition, list[bytes]] = {tp: [] for tp in wanted}
    if not wanted:
        return out
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id=client_id,
        max_partition_fetch_bytes=MAX_RECORD_BYTES + 64 * 1024,
        fetch_max_wait_ms=10,
    )
    await reader.start()
    try:
        reader.assign(wanted)
        ends = await reader.end_offsets(wanted)
        found = await reader.offsets_for_times(dict.fromkeys(wanted, since_ms))
        todo: set[TopicPartition] = set()
        for tp in wanted:
            start = ends[tp] if found[tp] is None else found[tp].offset
            if start < ends[tp]:
                reader.seek(tp, start)
                todo.add(tp)
        while todo:
            batch = await reader.getmany(*todo, timeout_ms=500, max_records=20_000)
            for tp, records in batch.items():
                values = out[tp]
                end = ends[tp]
                for record in records:
                    if record.offset < end and record.value is not None:
                        values.append(record.value)
            for tp in list(todo):
                if await reader.position(tp) >= ends[tp]:
                    todo.discard(tp)
        return out
    finally:
        await reader.stop()


async def ensure_topics(bootstrap: str, topics: Iterable[TopicSpec]) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="supernet-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                t.name,
                num_partitions=t.partitions,
                replication_factor=1,
                topic_configs={"max.message.bytes": str(t.max_record_bytes), **dict(t.configs)},
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
        await admin.close()
