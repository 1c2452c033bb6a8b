"""Records to Kafka: attempts, receipts and dead letters, acknowledged in batches.

Records wait in one queue; a writer task drains it into one producer batch per
(topic, partition) and hands each batch to aiokafka (``create_batch``/``send_batch``),
which costs a fraction of a ``send()`` per record. When Kafka acknowledges a batch, the
``on_durable`` callback of each of its records runs, in order: that is when an attempt
may be submitted, or a request's offset committed.

A batch that fails with a retriable error (the broker restarting, a leader moving, a
timeout) goes back to the front of the queue and is sent again after a backoff
(``router.support.backoff.Backoff``): records may be written twice (receipts are
at-least-once; attempts are idempotent by content), never dropped. A batch Kafka refuses
for good (not retriable) is fatal: ``run()`` raises (so the task group running it ends
the worker), since the outcome is not durable and the worker must stop without
committing it.

Lifecycle: ``run()`` in a task for as long as the producer is up; ``flush()`` before
stopping waits (on an event ``run`` sets, not by polling) until both queues are empty,
then for the producer's acknowledgements.

Receipts are keyed by message id and partitioned by CRC-32 of the key, so every status of
one message lands in one partition, in order. (Kafka's own partitioner, murmur2, would
cost several microseconds per record in pure Python; only supernet writes receipts.)
Attempt records go to the partition number of their request's partition.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from router.contracts import wire
from router.engine import attempts, kafka
from router.support.backoff import Backoff

log = structlog.get_logger("router.engine.sink")

Done = Callable[[], None]
DRAIN = 4000  # records taken from the queue per round, at most
RETRY_INITIAL_S = 0.1  # the wait before sending refused batches again, doubling per round
RETRY_CAP_S = 2.0
# Errors worth sending again besides those aiokafka marks ``retriable``: its own timeout
# (a batch that expired while the broker was away) is not marked so.
RETRIABLE = (
    asyncio.CancelledError,
    kafka.KafkaConnectionError,
    kafka.KafkaTimeoutError,
    OSError,
)

# (topic, partition or -1 for "by key", key, value, on_durable)
Entry = tuple[str, int, bytes | None, bytes, Done | None]


class KafkaSink:
    def __init__(
        self,
        producer: kafka.AIOKafkaProducer,
        receipts: str,
        dead_letter: str,
        attempts_topic: str = "sms.attempts",
        on_state: Callable[[bool], None] | None = None,
        backoff: Backoff | None = None,
        on_ack_seconds: Callable[[float], None] | None = None,
    ) -> None:
        self.producer = producer
        self.receipts_topic = receipts
        self.dead_letter_topic = dead_letter
        self.attempts_topic = attempts_topic
        self.on_state = on_state or (lambda up: None)
        self.on_ack_seconds = on_ack_seconds or (lambda seconds: None)  # per batch
        self._queue: deque[Entry] = deque()
        self._dead: deque[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], Done]] = (
            deque()
        )
        self._wakeup = asyncio.Event()
        self._emptied = asyncio.Event()  # set by run() each time it found both queues empty
        self._failure: RuntimeError | None = None  # a batch Kafka refused for good
        self._partitions: dict[str, int] = {}
        self.backoff = backoff or Backoff(RETRY_INITIAL_S, RETRY_CAP_S)
        self._retries = 0  # consecutive failed batches, for the log
        self._refused = False  # a retriable failure since run() last backed off
        self.unacked = 0  # batches handed to Kafka and not yet acknowledged
        self.retried = 0  # records sent again after a retriable failure

    def receipt(self, receipt: wire.Receipt, on_durable: Done | None) -> None:
        self._queue.append(
            (self.receipts_topic, -1, receipt.id.encode(), wire.ENCODER.encode(receipt), on_durable)
        )
        self._wakeup.set()

    def attempt(
        self, record: attempts.AttemptRecord, partition: int, on_durable: Done | None
    ) -> None:
        self._queue.append(
            (
                self.attempts_topic,
                partition,
                record.id.encode(),
                attempts.ENCODER.encode(record),
                on_durable,
            )
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
        """Write what is queued until cancelled; raises once Kafka refused a batch for
        good."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._raise_failure()
            await self._send_dead_letters()
            while self._queue and self._failure is None:
                if not await self._send_round():
                    break
            self._raise_failure()
            if not self._queue and not self._dead:
                self._emptied.set()
            if self._refused:  # Kafka refused something since the last wait: back off
                self._refused = False
                await asyncio.sleep(self.backoff.delay())
                self._wakeup.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _send_dead_letters(self) -> None:
        while self._dead:
            record = self._dead.popleft()
            value, key, headers, _ = record
            try:
                future = await self.producer.send(
                    self.dead_letter_topic, value, key=key, headers=headers
                )
            except Exception as e:  # no metadata, connection gone: as a failed batch
                self._dead.appendleft(record)
                self._fatal(e)
                return
            future.add_done_callback(lambda f, r=record: self._dead_acked(f, r))

    async def _send_round(self) -> bool:
        """One round of batches; False when Kafka refused to take them (they are queued
        again, in order, for the next round)."""
        queue = self._queue
        producer = self.producer
        entries = [queue.popleft() for _ in range(min(DRAIN, len(queue)))]
        groups: dict[tuple[str, int], list[Entry]] = {}
        sent = 0  # groups handed to the producer whole
        handed = 0  # records of those and of the group being sent, handed to the producer
        order: list[list[Entry]] = []
        try:
            for entry in entries:
                topic, p, key, _, _ = entry
                if p < 0:
                    n = self._partitions.get(topic)
                    if n is None:
                        n = self._partitions[topic] = len(await producer.partitions_for(topic))
                    p = zlib.crc32(key) % n if key is not None else 0
                group = groups.get((topic, p))
                if group is None:
                    group = groups[(topic, p)] = []
                    order.append(group)
                group.append(entry)
            for (topic, p), group in groups.items():
                batch = producer.create_batch()
                members: list[Entry] = []
                for entry in group:
                    if batch.append(key=entry[2], value=entry[3], timestamp=None) is None:
                        self._track(await producer.send_batch(batch, topic, partition=p), members)
                        handed += len(members)
                        batch = producer.create_batch()
                        members = []
                        batch.append(key=entry[2], value=entry[3], timestamp=None)
                    members.append(entry)
                self._track(await producer.send_batch(batch, topic, partition=p), members)
                handed += len(members)
                sent += 1
        except Exception as e:  # not connected, no metadata: nothing of the rest was sent
            if len(order) == len(groups) and sum(map(len, order)) == len(entries):
                done_before = sum(len(g) for g in order[:sent])
                partial = handed - done_before  # of the group being sent
                rest = [x for g in order[sent:] for x in g][partial:]
            else:  # failed while grouping: nothing was handed over
                rest = entries
            queue.extendleft(reversed(rest))
            self._fatal(e)
            return False
        return True

    def _track(self, future: asyncio.Future[Any], entries: list[Entry]) -> None:
        self.unacked += 1
        handed = time.monotonic()
        future.add_done_callback(lambda f: self._acked(f, entries, handed))

    def _acked(self, future: asyncio.Future[Any], entries: list[Entry], handed: float) -> None:
        self.unacked -= 1
        self.on_ack_seconds(time.monotonic() - handed)
        error = self._error(future)
        if error is not None:
            self._retry(error, entries)
            return
        self._ok()
        for entry in entries:
            done = entry[4]
            if done is not None:
                done()

    def _dead_acked(
        self,
        future: asyncio.Future[Any],
        record: tuple[bytes | None, bytes | None, list[tuple[str, bytes]], Done],
    ) -> None:
        error = self._error(future)
        if error is not None:
            if self._fatal(error):
                return
            self.retried += 1
            self._dead.appendleft(record)
            self._wakeup.set()
            return
        self._ok()
        record[3]()

    @staticmethod
    def _error(future: asyncio.Future[Any]) -> BaseException | None:
        if future.cancelled():
            return asyncio.CancelledError("the producer cancelled the batch")
        return future.exception()

    def _fatal(self, error: BaseException) -> bool:
        """True (and the sink failed) when ``error`` will not go away by sending again."""
        if (
            getattr(error, "retriable", False)
            or isinstance(error, RETRIABLE)
            # uvloop raises RuntimeError writing to a connection the broker closed (aiokafka
            # issue 1038): as retriable as the OSError it stands for.
            or (isinstance(error, RuntimeError) and "closed" in str(error).lower())
        ):
            self._retries += 1
            self._refused = True
            self.on_state(False)
            if self._retries == 1:
                log.warning("Kafka did not take a batch; sending it again", error=repr(error))
            return False
        if self._failure is None:
            self._failure = RuntimeError(f"Kafka did not take a batch of records: {error!r}")
            self._wakeup.set()  # run() raises it
        return True

    def _retry(self, error: BaseException, entries: list[Entry]) -> None:
        if self._fatal(error):
            return
        self.retried += len(entries)
        self._queue.extendleft(reversed(entries))
        self._wakeup.set()

    def _ok(self) -> None:
        if self._retries:
            log.info("Kafka takes batches again", after_failed_batches=self._retries)
            self._retries = 0
            self.backoff.reset()
        self.on_state(True)

    async def flush(self) -> None:
        """Hand everything queued to Kafka and wait for its acknowledgements (again, if a
        batch came back for a retry meanwhile). Needs ``run()`` running."""
        while True:
            while self._queue or self._dead:
                self._emptied.clear()
                await self._emptied.wait()
            await self.producer.flush()
            if not self._queue and not self._dead:
                return
