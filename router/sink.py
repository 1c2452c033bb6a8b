"""Outcome records to Kafka: receipts and dead letters, acknowledged in batches.

Records wait in one queue; a writer task drains it into one producer batch per
(topic, partition) and hands each batch to aiokafka (``create_batch``/``send_batch``),
which costs a fraction of a ``send()`` per record. When Kafka acknowledges a batch, the
``on_durable`` callback of each of its records runs, in order: that is when a request's
offset may be committed. A batch Kafka refuses after its retries is fatal (``failed()``
raises): the outcome is not durable, so the worker must stop without committing it.

Receipts are keyed by message id and partitioned by CRC-32 of the key, so every status of
one message lands in one partition, in order. (Kafka's own partitioner, murmur2, would
cost several microseconds per record in pure Python; only supernet writes receipts.)
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from router import kafka, wire

Done = Callable[[], None]
DRAIN = 4000  # records taken from the queue per round, at most


class KafkaSink:
    def __init__(self, producer: kafka.AIOKafkaProducer, receipts: str, dead_letter: str) -> None:
        self.producer = producer
        self.receipts_topic = receipts
        self.dead_letter_topic = dead_letter
        self._queue: deque[tuple[str, bytes | None, bytes, Done | None]] = deque()
        self._dead: deque[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], Done]] = (
            deque()
        )
        self._wakeup = asyncio.Event()
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._partitions: dict[str, int] = {}
        self.unacked = 0  # batches handed to Kafka and not yet acknowledged

    def receipt(self, receipt: wire.Receipt, on_durable: Done | None) -> None:
        self._queue.append(
            (self.receipts_topic, receipt.id.encode(), wire.ENCODER.encode(receipt), on_durable)
        )
        self._wakeup.set()

    def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_durable: Done,
    ) -> None:
        # Rare, and possibly megabytes: one record per send, outside the batches.
        self._dead.append((value, key, headers, on_durable))
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._dead:
                value, key, headers, done = self._dead.popleft()
                future = await self.producer.send(
                    self.dead_letter_topic, value, key=key, headers=headers
                )
                self._track(future, [done])
            while self._queue:
                await self._send_round()

    async def _send_round(self) -> None:
        queue = self._queue
        producer = self.producer
        batches: dict[tuple[str, int], tuple[Any, list[Done]]] = {}
        for _ in range(min(DRAIN, len(queue))):
            topic, key, value, done = queue.popleft()
            n = self._partitions.get(topic)
            if n is None:
                n = self._partitions[topic] = len(await producer.partitions_for(topic))
            p = zlib.crc32(key) % n if key is not None else 0
            entry = batches.get((topic, p))
            if entry is None:
                entry = batches[(topic, p)] = (producer.create_batch(), [])
            if entry[0].append(key=key, value=value, timestamp=None) is None:  # full
                self._track(await producer.send_batch(entry[0], topic, partition=p), entry[1])
                entry = batches[(topic, p)] = (producer.create_batch(), [])
                entry[0].append(key=key, value=value, timestamp=None)
            if done is not None:
                entry[1].append(done)
        for (topic, p), (batch, dones) in batches.items():
            self._track(await producer.send_batch(batch, topic, partition=p), dones)

    def _track(self, future: asyncio.Future[Any], dones: list[Done]) -> None:
        self.unacked += 1
        future.add_done_callback(lambda f: self._acked(f, dones))

    def _acked(self, future: asyncio.Future[Any], dones: list[Done]) -> None:
        self.unacked -= 1
        if future.cancelled() or future.exception() is not None:
            if not self._failed.done():
                error = None if future.cancelled() else future.exception()
                self._failed.set_exception(
                    RuntimeError(f"Kafka did not take a batch of outcome records: {error!r}")
                )
            return
        for done in dones:
            done()

    async def failed(self) -> None:
        """Raises when a record could not be written; never returns otherwise."""
        await self._failed

    async def flush(self) -> None:
        """Hand everything queued to Kafka and wait for its acknowledgements."""
        while self._queue or self._dead:  # noqa: ASYNC110 - run() empties them
            await asyncio.sleep(0.005)
        await self.producer.flush()
