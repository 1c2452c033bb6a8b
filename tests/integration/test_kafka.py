"""Kafka is real and usable from our stack: aiokafka on uvloop (over SASL_SSL as the
``admin`` user with security on), a consumer group with manual offset commits, and a
restart that resumes exactly at the committed offset."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from router.support.credentials import KafkaAccess

pytestmark = pytest.mark.integration

TOTAL = 10_000
FIRST = 6_000


def consumer(access: KafkaAccess, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        **access.client_kwargs(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )


async def test_group_resumes_from_committed_offset(
    kafka_admin: KafkaAccess, new_topic: Callable[[int], Awaitable[str]]
) -> None:
    topic = await new_topic(3)
    group = f"{topic}.group"

    producer = AIOKafkaProducer(**kafka_admin.client_kwargs(), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                json.dumps({"id": n, "to": f"+4477009{n:05d}", "body": "hi"}).encode(),
                key=f"+4477009{n:05d}".encode(),
            )
            for n in range(TOTAL)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    # First consumer: process exactly FIRST records, commit what it processed, stop.
    first: list[int] = []
    processed_to: dict[TopicPartition, int] = {}
    c1 = consumer(kafka_admin, topic, group)
    await c1.start()
    try:
        async with asyncio.timeout(60):
            while len(first) < FIRST:
                for tp, records in (await c1.getmany(timeout_ms=1000)).items():
                    for record in records:
                        if len(first) == FIRST:
                            break
                        assert record.value is not None
                        first.append(json.loads(record.value)["id"])
                        processed_to[tp] = record.offset + 1  # commit = last processed + 1
        await c1.commit(processed_to)
    finally:
        await c1.stop()

    # Second consumer in the same group after the restart: it must read the rest, only.
    second: list[int] = []
    c2 = consumer(kafka_admin, topic, group)
    await c2.start()
    try:
        async with asyncio.timeout(60):
            while len(second) < TOTAL - FIRST:
                for records in (await c2.getmany(timeout_ms=1000)).values():
                    second.extend(json.loads(r.value)["id"] for r in records if r.value)
        # Anything re-read would show up now, beyond the expected count.
        for records in (await c2.getmany(timeout_ms=1500)).values():
            second.extend(json.loads(r.value)["id"] for r in records if r.value)
        await c2.commit()
        partitions = list(c2.assignment())
        ends = await c2.end_offsets(partitions)
        committed = {tp: await c2.committed(tp) for tp in partitions}
    finally:
        await c2.stop()

    assert len(first) == FIRST
    assert len(second) == TOTAL - FIRST, "the restarted consumer re-read or missed records"
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == list(range(TOTAL))
    assert committed == ends
