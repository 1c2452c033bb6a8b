"""Interop with a Kafka client that is not ours: kcat (librdkafka) produces and we
consume; we produce and kcat consumes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.integration

COUNT = 100
KCAT = shutil.which("kcat")


@pytest.fixture(scope="module")
def kcat() -> str:
    if KCAT is None:
        pytest.fail("kcat is not installed: run deploy/bootstrap.sh")
    return KCAT


async def test_kcat_produces_we_consume(
    kafka_bootstrap: str, kcat: str, new_topic: Callable[[int], Awaitable[str]]
) -> None:
    topic = await new_topic(3)
    lines = "".join(f"key-{n}|{json.dumps({'id': n})}\n" for n in range(COUNT))
    result = await asyncio.to_thread(
        subprocess.run,
        [kcat, "-P", "-b", kafka_bootstrap, "-t", topic, "-K", "|"],
        input=lines, text=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
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
    kafka_bootstrap: str, kcat: str, new_topic: Callable[[int], Awaitable[str]]
) -> None:
    topic = await new_topic(3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(COUNT):
            await producer.send(topic, json.dumps({"id": n}).encode(), key=f"key-{n}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    result = await asyncio.to_thread(
        subprocess.run,
        [kcat, "-C", "-b", kafka_bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
         "-f", "%k|%s\\n", "-X", f"group.id=kcat-{uuid.uuid4().hex[:8]}"],
        text=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = dict(line.split("|", 1) for line in result.stdout.splitlines() if line)
    assert {k: json.loads(v)["id"] for k, v in got.items()} == {f"key-{n}": n for n in range(COUNT)}
