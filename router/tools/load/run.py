"""The Kafka shell of the load generator: produce at the paced rate, then read receipts.

1. Note the end offsets of the receipts topic (manual assignment, no consumer group), so
   that only receipts written after the run began are read.
2. Build the records before the clock starts (``Prebuilt``: key, partition = CRC32 of the
   key, so one destination always lands on one partition, and the JSON without its
   ``created_at``), so that producing costs an append per message and what the machine
   pays for the load generator during a run is little more than the Kafka client's work.
3. Produce: every slice, the pacer's due count of records gets the slice's ``created_at``
   and goes into one batch per partition; batches go out without awaiting each other,
   and at most ``MAX_PENDING`` of them are unacknowledged at a time.
4. Wait until every produced id has an outcome receipt or ``wait_s`` passes; then, for up
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
PREBUILT = 1_000_000  # records built ahead at most (about 400 bytes each); then more inline


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
    # Receipts carry their own times, so reading them late costs no latency figure: fetch
    # in large, rare requests (each Kafka request over TLS costs the load generator ~10 us
    # of CPU to write, whatever its size: benchmarks/tls_write.py).
    consumer = kafka.consumer(
        config.receipts, None, fetch_max_wait_ms=200, fetch_min_bytes=1024 * 1024
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, ends[tp])
    except BaseException:
        await kafka.let_go(consumer.stop)
        raise
    return consumer


LOG_APPEND_TIME = 1  # a record's timestamp_type when the broker stamped it on append


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
                appended = record.timestamp if record.timestamp_type == LOG_APPEND_TIME else None
                tally.add(receipt, appended)


class Prebuilt:
    """The run's records, drawn from ``traffic`` ahead of time: ``(id, key, partition,
    head)``, where ``head`` is the request's JSON without its closing brace and with
    ``,"created_at":`` appended (``created_at`` is its last field, and omitted when None),
    so that the record is ``head + b"<ms>}"``. At most ``PREBUILT`` are built ahead; a
    longer run builds the next ones when it has used those (a pause the pacer catches up)."""

    def __init__(self, traffic: Traffic, total: int, partitions: list[int]) -> None:
        self.traffic = traffic
        self.left = total
        self.partitions = partitions
        self.records: list[tuple[str, bytes, int, bytes]] = []
        self.at = 0
        self._build()

    def _build(self) -> None:
        n = min(self.left, PREBUILT)
        self.left -= n
        partitions, count = self.partitions, len(self.partitions)
        draw, encode, crc32 = self.traffic.next, ENCODER.encode, zlib.crc32
        records = []
        for _ in range(n):
            request = draw(None)
            key = request.to.encode()
            head = encode(request)[:-1] + b',"created_at":'
            records.append((request.id, key, partitions[crc32(key) % count], head))
        self.records, self.at = records, 0

    def take(self, n: int) -> list[tuple[str, bytes, int, bytes]]:
        """The next ``n`` records (fewer only at the end of the run)."""
        if self.at >= len(self.records) and self.left:
            self._build()
        out = self.records[self.at : self.at + n]
        self.at += len(out)
        if len(out) < n and self.left:
            out += self.take(n - len(out))
        return out


async def _produce(
    producer: kafka.AIOKafkaProducer,
    topic: str,
    traffic: Traffic,
    pacer: Pacer,
    tally: Tally,
    on_batch: Callable[[], None],
    on_ready: Callable[[], None] | None = None,
) -> float:
    """Produce the whole run; returns seconds from the first send to the last ack.
    ``on_ready`` runs once the records are built, just before the first is due."""
    prebuilt = Prebuilt(traffic, pacer.total, sorted(await producer.partitions_for(topic)))
    if on_ready is not None:
        on_ready()
    pending: deque[asyncio.Future[Any]] = deque()
    clock = time.monotonic
    expect = tally.expect
    began = clock()
    while not pacer.done:
        n = pacer.take(clock())
        if n:
            created = time.time_ns() // 1_000_000
            tail = b"%d}" % created
            batches: dict[int, Any] = {}
            for id_, key, p, head in prebuilt.take(n):
                expect(id_, created)
                value = head + tail
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
    config: LoadConfig,
    traffic: Traffic,
    pacer: Pacer,
    console: Console | None = None,
    on_ready: Callable[[], None] | None = None,
) -> Summary:
    """Produce ``pacer.total`` requests at ``pacer.rate``, collect receipts, summarise.
    ``on_ready`` runs when the records are built and producing begins (a benchmark starts
    its CPU meter there)."""
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
        await kafka.close_producer(producer)
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
                        producer, config.requests_topic, traffic, pacer, tally, on_batch, on_ready
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
        await kafka.close_producer(producer)
        await kafka.let_go(consumer.stop)
    return tally.summary(seconds, pacer.rate)


async def _wait(done: Callable[[], bool], timeout_s: float, tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        tick()
