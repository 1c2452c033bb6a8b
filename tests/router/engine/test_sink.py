"""``KafkaSink`` with a plain fake producer: batches Kafka refuses for a while are sent
again, in order, and every record's callback runs exactly once; a refusal for good is
fatal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from router.contracts import wire
from router.engine.attempts import IN_FLIGHT, AttemptRecord
from router.engine.sink import KafkaSink


class FakeBatch:
    def __init__(self, limit: int) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.limit = limit

    def append(self, *, key: bytes | None, value: bytes, timestamp: None) -> object | None:
        if len(self.records) >= self.limit:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """Fails the first ``failures`` batches with ``error``; keeps what it took."""

    def __init__(self, failures: int, error: Exception, batch_limit: int = 3) -> None:
        self.failures = failures
        self.error = error
        self.batch_limit = batch_limit
        self.written: list[tuple[str, int, bytes | None, bytes]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_limit)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            future.set_exception(self.error)
        else:
            self.written += [(topic, partition, k, v) for k, v in batch.records]
            future.set_result(None)
        return future

    async def flush(self) -> None:
        return None


def receipt(i: int) -> wire.Receipt:
    return wire.Receipt(id=f"m{i}", status="sent", ts=i)


async def drive(sink: KafkaSink, until: Any, timeout: float = 5.0) -> None:
    runner = asyncio.create_task(sink.run())
    try:
        async with asyncio.timeout(timeout):
            while not until():  # noqa: ASYNC110 - a test driving the sink's own loop
                await asyncio.sleep(0.01)
    finally:
        runner.cancel()


async def test_retriable_failures_are_sent_again_and_each_callback_runs_once() -> None:
    producer = FakeProducer(failures=3, error=KafkaTimeoutError())
    states: list[bool] = []
    sink = KafkaSink(producer, "r", "d", "a", on_state=states.append)
    done: list[int] = []

    def note(i: int) -> Any:
        return lambda: done.append(i)

    for i in range(20):
        sink.receipt(receipt(i), note(i))
    record = AttemptRecord(id="m0", state=IN_FLIGHT, carrier="c", attempt=1)
    sink.attempt(record, 2, lambda: done.append(-1))
    await drive(sink, lambda: len(done) == 21)
    assert sorted(done) == [-1, *range(20)]
    assert len(done) == len(set(done))
    assert sink.retried > 0
    assert False in states
    assert states[-1] is True
    ids = [v for t, _, _, v in producer.written if t == "r"]
    assert len(ids) >= 20  # at-least-once: a resent batch may be written twice
    assert [(t, p) for t, p, _, _ in producer.written if t == "a"] == [("a", 2)]


async def test_a_refusal_for_good_is_fatal() -> None:
    producer = FakeProducer(failures=1, error=MessageSizeTooLargeError())
    sink = KafkaSink(producer, "r", "d", "a")
    sink.receipt(receipt(1), lambda: None)
    runner = asyncio.create_task(sink.run())
    with pytest.raises(RuntimeError, match="did not take"):
        async with asyncio.timeout(5):
            await sink.failed()
    runner.cancel()
