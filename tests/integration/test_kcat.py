"""Interop with a Kafka client that is not ours: kcat (librdkafka) produces and we
consume; we produce and kcat consumes. With security on both connect as ``admin``: kcat
over SASL_SSL with PLAIN (Debian 12's librdkafka 2.0.2 cannot do SCRAM with Kafka 4),
aiokafka with SCRAM-SHA-512, both trusting only the project CA."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks._chaos_hostile import kcat_options
from router.support.credentials import KafkaAccess

pytestmark = pytest.mark.integration

COUNT = 100
KCAT = shutil.which("kcat")


@pytest.fixture(scope="module")
def kcat() -> str:
    if KCAT is None:
        pytest.fail("kcat is not installed: run deploy/bootstrap.sh")
    return KCAT


async def test_kcat_produces_we_consume(
    kafka_admin: KafkaAccess, kcat: str, new_topic: Callable[[int], Awaitable[str]]
) -> None:
    topic = await new_topic(3)
    lines = "".join(f"key-{n}|{json.dumps({'id': n})}\n" for n in range(COUNT))
    result = await asyncio.to_thread(
        subprocess.run,
        [kcat, "-P", *kcat_options(kafka_admin), "-t", topic, "-K", "|"],
        input=lines, text=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_admin.client_kwargs(),
        group_id=f"{topic}.ours",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: dict[str, int] = {}
    try:
        async with asyncio.timeout(30):
            while len(got) < COUNT:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        assert r.key is not None
                        assert r.value is not None
                        got[r.key.decode()] = json.loads(r.value)["id"]
    finally:
        await consumer.stop()
    assert got == {f"key-{n}": n for n in range(COUNT)}


async def test_we_produce_kcat_consumes(
    kafka_admin: KafkaAccess, kcat: str, new_topic: Callable[[int], Awaitable[str]]
) -> None:
    topic = await new_topic(3)
    producer = AIOKafkaProducer(**kafka_admin.client_kwargs(), acks="all")
    await producer.start()
    try:
        for n in range(COUNT):
            await producer.send(topic, json.dumps({"id": n}).encode(), key=f"key-{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    result = await asyncio.to_thread(
        subprocess.run,
        [kcat, "-C", *kcat_options(kafka_admin), "-t", topic, "-o", "beginning", "-e", "-q",
         "-f", "%k|%s\\n", "-X", f"group.id=kcat-{uuid.uuid4().hex[:8]}"],
        text=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = dict(line.split("|", 1) for line in result.stdout.splitlines() if line)
    assert {k: json.loads(v)["id"] for k, v in got.items()} == {f"key-{n}": n for n in range(COUNT)}
