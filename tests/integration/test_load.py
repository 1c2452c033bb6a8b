"""The load generator against the real Kafka: what it produces, and how it reads receipts.

It runs as its real users (``producer`` writes the requests, ``receipts`` reads the
receipts) on fresh topics granted to them; the test's own clients are ``admin``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from router.contracts.wire import ENCODER, Receipt, SendRequest, Status, decode_request
from router.engine import kafka
from router.support.credentials import KafkaAccess
from router.tools.infra.kafka_acls import Pipeline
from router.tools.load.mix import Mix
from router.tools.load.numbers import build_plan
from router.tools.load.pace import Pacer
from router.tools.load.run import LoadConfig, run_load
from router.tools.load.traffic import Traffic
from tests.conftest import Grant, KafkaUser
from tests.router.tools.load.load_helpers import write_network

pytestmark = pytest.mark.integration

NewTopic = Callable[[int], Awaitable[str]]


async def read_all(access: KafkaAccess, topic: str, expected: int, timeout_s: float = 20.0
                   ) -> list[tuple[bytes, bytes]]:  # fmt: skip
    consumer = kafka.consumer(access, None, topic)
    await consumer.start()
    out: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(out) < expected:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out += [(r.key, r.value) for r in records]
        await asyncio.sleep(0.3)  # nothing more should come
        for records in (await consumer.getmany(timeout_ms=200)).values():
            out += [(r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return out


@pytest.fixture(scope="module")
def tiny_network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_network(tmp_path_factory.mktemp("network"))


def _traffic(network: Path, prefix: str) -> Traffic:
    return Traffic(build_plan(network, 2), Mix(), 2, prefix)


async def load_config(
    requests: str, receipts: str, wait_s: float, kafka_access: KafkaUser, kafka_grants: Grant
) -> LoadConfig:
    """The load tool as ``producer`` and ``receipts`` on these (granted) topics."""
    await kafka_grants(Pipeline(requests, receipts, f"{requests}.dead-letter",
                                group=f"{requests}.fleet"))  # fmt: skip
    return LoadConfig(kafka_access("producer"), kafka_access("receipts"),
                      requests_topic=requests, receipts_topic=receipts, wait_s=wait_s)  # fmt: skip


async def test_produces_decodable_requests_at_the_rate(
    kafka_admin: KafkaAccess, kafka_access: KafkaUser, kafka_grants: Grant,
    new_topic: NewTopic, tiny_network: Path,
) -> None:  # fmt: skip
    requests, receipts = await new_topic(4), await new_topic(2)
    count, rate = 3000, 6000.0
    config = await load_config(requests, receipts, 0.3, kafka_access, kafka_grants)
    summary = await run_load(config, _traffic(tiny_network, "it-"), Pacer(rate, count))
    assert summary.produced == count
    assert summary.without_outcome == count  # nobody answers on these topics
    # Never faster than the schedule; "not absurdly slower" is left to generous bounds.
    assert summary.produce_seconds >= (count - 1) / rate * 0.95
    assert summary.produce_seconds < 20 * count / rate + 5

    records = await read_all(kafka_admin, requests, count)
    assert len(records) == count
    decoded = [decode_request(value) for _, value in records]
    assert all(key == r.to.encode() for (key, _), r in zip(records, decoded, strict=True))
    assert len({r.id for r in decoded}) == count
    assert all(r.created_at is not None and r.created_at > 1_600_000_000_000 for r in decoded)


async def test_reads_receipts_of_its_own_run(
    kafka_admin: KafkaAccess, kafka_access: KafkaUser, kafka_grants: Grant,
    new_topic: NewTopic, tiny_network: Path,
) -> None:  # fmt: skip
    requests, receipts = await new_topic(3), await new_topic(3)
    # Receipts already on the topic before the run must not count.
    producer = kafka.producer(kafka_admin)
    await producer.start()
    stale = Receipt("rr-00000001", "failed", ts=1, error_code=30008)
    await producer.send_and_wait(receipts, ENCODER.encode(stale), key=b"rr-00000001")

    count = 200
    answered: list[SendRequest] = []

    async def fake_worker() -> None:
        """Answers all but the last 3 requests: sent (some twice) or failed, and some
        delivered or undelivered; plus a receipt for an id of another run."""
        got = await read_all(kafka_admin, requests, count)
        for k, (_, value) in enumerate(sorted(got, key=lambda kv: decode_request(kv[1]).id)):
            r = decode_request(value)
            if k >= count - 3:
                continue
            answered.append(r)
            assert r.created_at is not None
            status: Status = "failed" if k % 5 == 0 else "sent"
            code = 21211 if status == "failed" else None
            events = [Receipt(r.id, status, ts=r.created_at + 10 + k, error_code=code)]
            if k % 3 == 0:
                events.append(events[0])  # at-least-once: a duplicate
            if status == "sent" and k % 2 == 0:
                events.append(Receipt(r.id, "delivered", ts=r.created_at + 1000 + k))
            if status == "sent" and k % 7 == 1:
                events.append(Receipt(r.id, "undelivered", ts=r.created_at + 900, error_code=30003))
            for e in events:
                await producer.send(receipts, ENCODER.encode(e), key=r.id.encode())
        await producer.send(receipts, ENCODER.encode(Receipt("zz-1", "sent", ts=5)), key=b"zz-1")
        await producer.flush()

    try:
        config = await load_config(requests, receipts, 1.5, kafka_access, kafka_grants)
        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(fake_worker())
            run = tg.create_task(
                run_load(config, _traffic(tiny_network, "rr-"), Pacer(2000, count))
            )
        await worker
        summary = run.result()
    finally:
        await producer.stop()

    ks = range(len(answered))
    sent = [k for k in ks if k % 5 != 0]
    assert summary.produced == count
    assert summary.with_outcome == len(answered) == count - 3
    assert summary.without_outcome == 3
    assert summary.by_status["sent"] == len(sent)
    assert summary.by_status["failed"] == len(answered) - len(sent)
    assert summary.by_error["failed 21211"] == len(answered) - len(sent)
    delivered = [k for k in sent if k % 2 == 0]
    undelivered = [k for k in sent if k % 7 == 1]
    assert summary.by_status["delivered"] == len(delivered)
    assert summary.by_status["undelivered"] == len(undelivered)
    assert summary.sent_without_delivery == len(set(sent) - set(delivered) - set(undelivered))
    assert summary.duplicates == len([k for k in ks if k % 3 == 0])
    assert summary.foreign == 1  # zz-1; the stale receipt was before the run
    assert summary.latency_sent.count == len(sent)
    assert summary.latency_sent.max_ms == 10 + max(sent)
    assert summary.latency_delivered.count == len(delivered)
    assert summary.latency_delivered.p50_ms is not None
    assert summary.latency_delivered.p50_ms >= 1000
