"""``KafkaSink`` with a plain fake producer: batches Kafka refuses for a while are sent
again, in order, after a backoff, and every record's callback runs exactly once; a refusal
for good is raised from ``run()``; ``flush`` waits for the queues and the producer."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from router.contracts import wire
from router.engine.attempts import IN_FLIGHT, AttemptRecord
from router.engine.sink import KafkaSink
from router.support.backoff import Backoff


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
        self.flushes = 0

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
        self.flushes += 1

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            raise self.error
        self.written.append((topic, -1, key, value or b""))
        future.set_result(None)
        return future


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


class Delays(Backoff):
    """A Backoff of tiny steps that notes each wait handed out, and each reset."""

    def __init__(self) -> None:
        super().__init__(0.001, 0.004, rng=lambda: 1.0)
        self.given: list[float] = []
        self.resets = 0

    def delay(self) -> float:
        d = super().delay()
        self.given.append(d)
        return d

    def reset(self) -> None:
        self.resets += 1
        super().reset()


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


async def test_a_refusal_for_good_is_raised_from_run() -> None:
    producer = FakeProducer(failures=1, error=MessageSizeTooLargeError())
    sink = KafkaSink(producer, "r", "d", "a")
    done: list[int] = []
    sink.receipt(receipt(1), lambda: done.append(1))
    with pytest.raises(RuntimeError, match="did not take"):
        async with asyncio.timeout(5):
            await sink.run()
    assert done == []  # the record is not durable: its offset must never be committed


async def test_a_refusal_for_good_fails_the_task_group_that_runs_the_sink() -> None:
    producer = FakeProducer(failures=1, error=MessageSizeTooLargeError())
    sink = KafkaSink(producer, "r", "d", "a")
    other = asyncio.Event()

    async def worker() -> None:
        async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
            tg.create_task(sink.run())
            tg.create_task(other.wait())  # another component: cancelled with the group
            sink.receipt(receipt(1), lambda: None)

    with pytest.raises(ExceptionGroup) as caught:
        await worker()
    assert caught.group_contains(RuntimeError, match="did not take")


async def test_a_dead_letter_refused_for_good_is_raised_from_run() -> None:
    producer = FakeProducer(failures=1, error=MessageSizeTooLargeError())
    sink = KafkaSink(producer, "r", "d", "a")
    sink.dead_letter(b"garbage", None, [], lambda: None)
    with pytest.raises(RuntimeError, match="did not take"):
        async with asyncio.timeout(5):
            await sink.run()


async def test_retries_back_off_and_a_taken_batch_resets_the_backoff() -> None:
    producer = FakeProducer(failures=3, error=KafkaTimeoutError(), batch_limit=100)
    delays = Delays()
    sink = KafkaSink(producer, "r", "d", "a", backoff=delays)
    done: list[int] = []
    sink.receipt(receipt(1), lambda: done.append(1))
    await drive(sink, lambda: done == [1])
    assert delays.given == [0.001, 0.002, 0.004]  # one wait per refusal, doubling
    assert delays.resets == 1


async def test_dead_letters_refused_for_a_while_are_sent_again() -> None:
    producer = FakeProducer(failures=2, error=KafkaTimeoutError())
    sink = KafkaSink(producer, "r", "d", "a", backoff=Backoff(0.001, 0.002))
    done: list[str] = []
    sink.dead_letter(b"garbage", b"k", [("reason", b"x")], lambda: done.append("dl"))
    await drive(sink, lambda: done == ["dl"])
    assert producer.written == [("d", -1, b"k", b"garbage")]


async def test_flush_waits_until_everything_queued_is_with_kafka() -> None:
    producer = FakeProducer(failures=2, error=KafkaTimeoutError())
    sink = KafkaSink(producer, "r", "d", "a", backoff=Backoff(0.001, 0.002))
    done: list[int] = []
    for i in range(10):
        sink.receipt(receipt(i), functools.partial(done.append, i))
    sink.dead_letter(b"x", None, [], lambda: done.append(-1))
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        runner = tg.create_task(sink.run())
        await sink.flush()
        runner.cancel()
    assert sorted(done) == [-1, *range(10)]
    assert producer.flushes == 1


async def test_flush_of_an_empty_sink_returns_at_once() -> None:
    producer = FakeProducer(failures=0, error=KafkaTimeoutError())
    sink = KafkaSink(producer, "r", "d", "a")
    async with asyncio.timeout(1):
        await sink.flush()
    assert producer.flushes == 1
