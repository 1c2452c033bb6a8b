"""The Kafka shell of the load generator: produce at the paced rate, then read receipts.

1. Note the end offsets of the receipts topic (manual assignment, no consumer group), so
   that only receipts written after the run began are read.
2. Produce: every slice, the pacer's due count is drawn from the traffic model and
   appended to one batch per partition (partition = CRC32 of the key, so one destination
   always lands on one partition); batches go out without awaiting each other, and at
   most ``MAX_PENDING`` of them are unacknowledged at a time.
3. Wait until every produced id has an outcome receipt or ``wait_s`` passes; then, for up
   to ``wait_s`` more, until every sent one has a delivery receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from router.contracts.wire import ENCODER, RECEIPT_DECODER
from router.engine import kafka
from router.support.credentials import KafkaAccess
from router.tools.load.pace import Pacer
from router.tools.load.report import Summary, Tally
from router.tools.load.traffic import Traffic

MAX_PENDING = 512  # unacknowledged batches before the producer waits
POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class LoadConfig:
    producer: KafkaAccess  # writes the requests (the ``producer`` user)
    receipts: KafkaAccess  # reads the receipts (the ``receipts`` user)
    admin: KafkaAccess | None = None  # creates missing topics, if given
    requests_topic: str = "sms.requests"
    receipts_topic: str = "sms.receipts"
    wait_s: float = 30.0
    delivery_wait_s: float | None = None  # how long to wait for deliveries (None: wait_s)
    partitions: int = 12  # used only when this run creates a missing topic
    progress: bool = False


class _NoProgress:
    """Stands in for rich's Progress when no bar is shown."""

    def add_task(self, description: str, total: float | None = None) -> TaskID:
        return TaskID(0)

    def update(self, task: TaskID, **fields: Any) -> None:
        pass


async def _receipts_consumer(config: LoadConfig) -> kafka.AIOKafkaConsumer:
    """A consumer assigned every partition of the receipts topic, at its current end."""
    counts = await kafka.partition_counts(config.receipts, [config.receipts_topic])
    if not counts.get(config.receipts_topic):
        raise kafka.KafkaError(
            f"topic {config.receipts_topic} does not exist, or {config.receipts.describe()} "
            "may not read it"
        )
    tps = [
        kafka.TopicPartition(config.receipts_topic, p) for p in range(counts[config.receipts_topic])
    ]
    consumer = kafka.consumer(config.receipts, None)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, ends[tp])
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def _read(consumer: kafka.AIOKafkaConsumer, tally: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=int(POLL_S * 1000), max_records=5000)
        for records in batch.values():
            for record in records:
                try:
                    receipt = RECEIPT_DECODER.decode(record.value)
                except msgspec.DecodeError:
                    tally.undecodable += 1
                    continue
                tally.add(receipt)


async def _produce(
    producer: kafka.AIOKafkaProducer,
    topic: str,
    traffic: Traffic,
    pacer: Pacer,
    tally: Tally,
    on_batch: Callable[[], None],
) -> float:
    """Produce the whole run; returns seconds from the first send to the last ack."""
    partitions = sorted(await producer.partitions_for(topic))
    pending: deque[asyncio.Future[Any]] = deque()
    clock = time.monotonic
    began = clock()
    while not pacer.done:
        n = pacer.take(clock())
        if n:
            created = time.time_ns() // 1_000_000
            batches: dict[int, Any] = {}
            for _ in range(n):
                request = traffic.next(created)
                tally.expect(request.id, created)
                key = request.to.encode()
                value = ENCODER.encode(request)
                p = partitions[zlib.crc32(key) % len(partitions)]
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=p))
                    batch = batches[p] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            for p, batch in batches.items():
                pending.append(await producer.send_batch(batch, topic, partition=p))
            on_batch()
        while pending and (pending[0].done() or len(pending) > MAX_PENDING):
            await pending.popleft()  # raises if the broker refused the batch
        await asyncio.sleep(pacer.wait(clock()))
    while pending:
        await pending.popleft()
    return clock() - began


async def run_load(
    config: LoadConfig, traffic: Traffic, pacer: Pacer, console: Console | None = None
) -> Summary:
    """Produce ``pacer.total`` requests at ``pacer.rate``, collect receipts, summarise."""
    if config.admin is not None:
        await kafka.ensure_topics(
            config.admin,
            [
                kafka.TopicSpec(config.requests_topic, config.partitions),
                kafka.TopicSpec(config.receipts_topic, config.partitions),
            ],
        )
    tally = Tally()
    producer = kafka.producer(config.producer)
    await producer.start()
    try:
        consumer = await _receipts_consumer(config)
    except BaseException:
        await producer.stop()
        raise
    progress: Progress | _NoProgress = _NoProgress()
    if config.progress:
        progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
    stop = asyncio.Event()
    try:
        with progress if isinstance(progress, Progress) else contextlib.nullcontext():
            sending = progress.add_task("produce", total=pacer.total)
            outcomes = progress.add_task("outcomes", total=pacer.total)

            def on_batch() -> None:
                progress.update(sending, completed=pacer.sent)
                progress.update(outcomes, completed=len(tally.outcome))

            async with asyncio.TaskGroup() as tg:
                tg.create_task(_read(consumer, tally, stop))
                try:
                    seconds = await _produce(
                        producer, config.requests_topic, traffic, pacer, tally, on_batch
                    )
                    on_batch()
                    await _wait(lambda: tally.missing_outcomes == 0, config.wait_s, on_batch)
                    if tally.sent_count:
                        delivered = progress.add_task("delivery", total=tally.sent_count)

                        def on_delivery() -> None:
                            progress.update(
                                delivered, completed=tally.sent_count - tally.awaiting_delivery
                            )
                            on_batch()

                        await _wait(
                            lambda: tally.awaiting_delivery == 0,
                            config.wait_s
                            if config.delivery_wait_s is None
                            else config.delivery_wait_s,
                            on_delivery,
                        )
                finally:
                    stop.set()
    finally:
        await producer.stop()
        await consumer.stop()
    return tally.summary(seconds, pacer.rate)


async def _wait(done: Callable[[], bool], timeout_s: float, tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        tick()
