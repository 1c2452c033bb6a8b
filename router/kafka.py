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
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError

__all__ = [
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "CommitFailedError",
    "ConsumerRebalanceListener",
    "KafkaError",
    "TopicPartition",
    "TopicSpec",
    "consumer",
    "ensure_topics",
    "producer",
]


MAX_RECORD_BYTES = 8 * 1024 * 1024
"""The largest record supernet's topics take: a producer's garbage, however big, must
still fit into the dead-letter topic unchanged."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    max_record_bytes: int = MAX_RECORD_BYTES


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
                topic_configs={"max.message.bytes": str(t.max_record_bytes)},
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
