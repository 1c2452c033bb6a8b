"""`supernet infra up --kafka-nodes 3`: a three-node KRaft cluster on loopback, secured as
the single node is, on its own ports and state directory (the suite's single node is
never touched). The engine's topics get three replicas and need two in sync; with one
node SIGKILLed, the engine's producer (``acks=all``, idempotent) still writes and every
record reads back; restarted, the node catches up (back in every partition's ISR)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks._harness import infra_up
from router.engine import kafka
from router.support.credentials import KafkaAccess
from router.support.infra_settings import InfraSettings
from router.tools.infra import lifecycle
from router.tools.infra.brokers import Kafka
from tests.integration.harness import read_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = InfraSettings(
    kafka_port=29192,
    kafka_controller_port=29193,
    mqtt_port=21983,
    prometheus_port=29190,
    kafka_heap="384m",
    kafka_nodes=3,
    state_dir=ROOT / ".supernet" / "test-cluster",
)
TOPIC = "cluster.test"


@pytest.fixture(scope="module")
def cluster() -> Iterator[InfraSettings]:
    infra_up(CLUSTER, ["kafka"])  # `supernet infra up --only kafka`, as a user runs it
    try:
        yield CLUSTER
    finally:
        lifecycle.down(CLUSTER, ["kafka"])


async def _replicas(admin: KafkaAccess, topic: str) -> list[tuple[int, int]]:
    """(replicas, in sync) per partition of ``topic``."""
    client = kafka.admin_client(admin)
    await client.start()
    try:
        (described,) = await client.describe_topics([topic])
        return [(len(p["replicas"]), len(p["isr"])) for p in described["partitions"]]
    finally:
        await kafka.let_go(client.close)


async def _until_in_sync(admin: KafkaAccess, limit_s: float) -> None:
    """Three replicas per partition, all three in sync, within ``limit_s`` (a node that
    just started, or restarted, catches up first)."""
    deadline = time.monotonic() + limit_s
    while (state := await _replicas(admin, TOPIC)) != [(3, 3)] * 6:
        assert time.monotonic() < deadline, f"not all replicas in sync: {state}"
        await asyncio.sleep(1)


async def _produce(access: KafkaAccess, prefix: str, n: int) -> None:
    producer = kafka.producer(access)
    await producer.start()
    try:
        futures = [await producer.send(TOPIC, b"v", key=f"{prefix}{i}".encode()) for i in range(n)]
        await asyncio.gather(*futures)
    finally:
        await kafka.close_producer(producer)


async def test_a_cluster_of_three_survives_one_node_killed(cluster: InfraSettings) -> None:
    admin = cluster.kafka("admin")
    assert admin.bootstrap.count(",") == 2  # every node is a bootstrap address
    await kafka.ensure_topics(admin, [kafka.TopicSpec(TOPIC, 6)])
    await _until_in_sync(admin, 60)

    await _produce(admin, "before-", 300)
    node = Kafka(cluster, 2)
    pid = node.proc.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # Two of three are in sync: acks=all with min.insync.replicas 2 still writes.
    await _produce(admin, "during-", 300)
    keys = {r.key for r in await read_topic(admin, TOPIC, idle=2)}
    assert {f"before-{i}".encode() for i in range(300)} <= keys
    assert {f"during-{i}".encode() for i in range(300)} <= keys

    infra_up(CLUSTER, ["kafka"])  # restarts the killed node only
    await _until_in_sync(admin, 90)  # the restarted node caught up


def test_the_cluster_settings_and_topics_are_those_of_three_nodes(
    cluster: InfraSettings,
) -> None:
    config = (Kafka(cluster, 3).dir / "server.properties").read_text()
    assert "node.id=3" in config
    assert (
        "controller.quorum.voters=1@127.0.0.1:29193,2@127.0.0.1:29195,3@127.0.0.1:29197" in config
    )
    assert "min.insync.replicas=2" in config
    assert "offsets.topic.replication.factor=3" in config
    single = dataclasses.replace(cluster, kafka_nodes=1)
    assert single.kafka_bootstrap == "127.0.0.1:29192"
