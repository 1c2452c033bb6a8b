"""The worker's requests consumer: intake with backpressure, rebalances, commits.

``RequestIntake`` hands records of the requests topic to the pipeline, pausing every
partition while ``max_in_flight`` requests are in flight or any is held (and resuming
below ``RESUME_AT`` of it). Records are tracked per (partition, assignment generation),
so that outcomes that finish after a partition was revoked (and maybe assigned back)
never touch the new bookkeeping.

On assignment (``Rebalance``) it restores the partitions' recent attempts from the
attempts log before any record of theirs is handled. The restore runs as a task, with
the partitions paused, not inside aiokafka's assignment callback: aiokafka heartbeats only
once the callback has returned, so a restore longer than the session timeout inside it
got the member expelled from the group while it went on to route the partitions' records
as their owner, next to the member they were given to (the chaos benchmark caught one
message accepted by two carriers that way). A record fetched before its partition's
restore is done is put back (``seek``) and read again. On revocation it cancels the
partitions' restore if one runs, then waits
(up to ``REVOKE_DRAIN_S``, woken by the offset tracker, not by polling) for the
partitions' records in flight, commits what is committable and forgets them.

``Consumer`` is the part of ``aiokafka.AIOKafkaConsumer`` this uses: the seam for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from router.engine import attempts, kafka
from router.engine.metrics import Metrics
from router.engine.offsets import OffsetTracker
from router.engine.pipeline import Pipeline

log = structlog.get_logger("router.engine.worker")

PartitionKey = tuple[kafka.TopicPartition, int]  # (partition, assignment generation)
ReadAttempts = Callable[[list[int]], Awaitable[dict[int, list[bytes]]]]
"""Attempt records of the dedupe window, per requests partition number (its values)."""

RESUME_AT = 0.75  # intake resumes below this share of max_in_flight
REVOKE_DRAIN_S = 5.0  # how long a rebalance waits for the revoked partitions' work
SLICE = 500  # records asked for at most per poll: keeps the loop responsive
LAG_POSITION_S = 0.5  # how long the lag gauge waits for a partition's position, at most


class Consumer(Protocol):
    def assignment(self) -> set[Any]: ...

    def pause(self, *partitions: Any) -> None: ...

    def resume(self, *partitions: Any) -> None: ...

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[Any, list[Any]]: ...

    def seek(self, partition: Any, offset: int) -> None: ...

    async def commit(self, offsets: dict[Any, int]) -> None: ...

    def highwater(self, partition: Any) -> int | None: ...

    async def position(self, partition: Any) -> int: ...


class RequestIntake:
    def __init__(
        self,
        consumer: Consumer,
        pipeline: Pipeline,
        tracker: OffsetTracker[PartitionKey],
        metrics: Metrics,
        *,
        max_in_flight: int,
        read_attempts: ReadAttempts,
        stop: asyncio.Event,
        revoke_drain_s: float = REVOKE_DRAIN_S,
    ) -> None:
        self.consumer = consumer
        self.pipeline = pipeline
        self.tracker = tracker
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.read_attempts = read_attempts
        self.stop = stop  # set: intake stops (the worker drains then)
        self.revoke_drain_s = revoke_drain_s
        self.generation: dict[kafka.TopicPartition, int] = {}  # tp -> its assignment's key
        self._generations = 0
        self._restores: dict[asyncio.Task[None], set[kafka.TopicPartition]] = {}
        self.paused = False
        self.fatal: BaseException | None = None  # set by a callback that cannot raise

    # -- partitions and offsets ---------------------------------------------------------

    def assign(self, assigned: set[kafka.TopicPartition]) -> None:
        for tp in assigned:
            self._generations += 1
            self.generation[tp] = self._generations
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    def begin_restore(self, assigned: set[kafka.TopicPartition]) -> None:
        """Pause ``assigned`` and restore their attempts in a task; then they are ours
        (``assign``) and fetched again (unless backpressure holds every partition)."""
        if not assigned:
            return
        self.consumer.pause(*assigned)
        task = asyncio.get_running_loop().create_task(self._restore_then_assign(assigned))
        self._restores[task] = set(assigned)
        task.add_done_callback(self._restores.pop)

    async def _restore_then_assign(self, assigned: set[kafka.TopicPartition]) -> None:
        try:
            await self.restore(assigned)
        except Exception as e:  # without the attempts no record of these partitions may
            self.fatal = e  # be routed: stop the worker, loudly (``run`` raises)
            return
        self.assign(assigned)
        if not self.paused:
            self.consumer.resume(*(assigned & self.consumer.assignment()))

    async def cancel_restores(self, partitions: set[kafka.TopicPartition] | None = None) -> None:
        """Cancel the restores of ``partitions`` (None: all) and wait for them to end."""
        tasks = [t for t, tps in self._restores.items() if partitions is None or tps & partitions]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def restore(self, assigned: set[kafka.TopicPartition]) -> None:
        """Read the assigned partitions' attempts of the dedupe window back into memory."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = await self.read_attempts(sorted(tp.partition for tp in assigned))
        total = 0
        for partition, values in sorted(found.items()):
            records = []
            for value in values:
                try:
                    records.append(attempts.DECODER.decode(value))
                except ValueError:
                    log.warning("undecodable attempt record skipped", partition=partition)
            self.pipeline.restore(partition, records)
            total += len(records)
        self.metrics.attempts_restored.inc(total)
        log.info("attempts restored", partitions=sorted(tp.partition for tp in assigned),
                 records=total, seconds=round(loop.time() - started, 3))  # fmt: skip

    async def revoke(self, revoked: set[kafka.TopicPartition]) -> None:
        await self.cancel_restores(revoked)
        tracker = self.tracker
        keys = [(tp, self.generation[tp]) for tp in revoked if tp in self.generation]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.revoke_drain_s):
                await tracker.settled(keys)
        offsets: dict[kafka.TopicPartition, int] = {}
        for key in keys:
            offset = tracker.committable(key)
            if offset is not None:
                offsets[key[0]] = offset
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except (kafka.CommitFailedError, kafka.KafkaError) as e:
                log.warning("commit on revoke failed; the new owner re-reads", error=str(e))
        abandoned = sum(tracker.forget(k) for k in keys)
        for tp in revoked:
            self.generation.pop(tp, None)
        self.pipeline.forget({tp.partition for tp in revoked})
        log.info("partitions revoked", partitions=sorted(tp.partition for tp in revoked),
                 abandoned_in_flight=abandoned)  # fmt: skip

    async def commit(self) -> None:
        """Commit what moved in the partitions assigned now; a failure is retried by the
        next commit."""
        current = set(self.generation.items())
        moved = {k: o for k, o in self.tracker.to_commit().items() if k in current}
        if not moved:
            return
        offsets = {key[0]: offset for key, offset in moved.items()}
        try:
            await self.consumer.commit(offsets)
        except kafka.CommitFailedError as e:
            log.warning("commit failed (rebalance); retried with the next commit", error=str(e))
            return
        except (kafka.KafkaError, OSError) as e:  # the broker is away: commit again later
            log.warning("commit failed; retried with the next commit", error=repr(e))
            return
        self.tracker.committed(moved)
        self.metrics.commits.inc()

    async def lag(self) -> dict[int, int]:
        """Per assigned partition (number), the records Kafka holds beyond the last one
        taken: the high watermark of this consumer's last fetch minus its position (the
        next offset getmany hands out). Partitions not fetched since assignment (no high
        watermark yet) are left out."""
        out: dict[int, int] = {}
        for tp in list(self.generation):
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                # Known at once, except while aiokafka resets it (then the next round).
                async with asyncio.timeout(LAG_POSITION_S):
                    position = await self.consumer.position(tp)
            except (TimeoutError, kafka.KafkaError, AssertionError):  # or revoked meanwhile
                continue
            out[tp.partition] = max(0, high - position)
        return out

    # -- intake -------------------------------------------------------------------------

    async def run(self) -> None:
        """Hand records to the pipeline until ``stop`` is set."""
        tracker = self.tracker
        pipeline = self.pipeline
        high = self.max_in_flight
        observe = self.metrics.decision_seconds.observe
        while not self.stop.is_set():
            if self.fatal is not None:
                raise RuntimeError("restoring attempts on assignment failed") from self.fatal
            self._backpressure()
            room = max(1, high - tracker.in_flight)
            batches = await self.consumer.getmany(timeout_ms=100, max_records=min(room, SLICE))
            self._take(batches)
            if pipeline.decisions:
                observe(pipeline.decision_time / pipeline.decisions)
                pipeline.decision_time = 0.0
                pipeline.decisions = 0
        await self.cancel_restores()
        log.info("intake stopped", in_flight=tracker.in_flight)

    def _backpressure(self) -> None:
        consumer = self.consumer
        in_flight = self.tracker.in_flight
        held = bool(self.pipeline.held)
        if (in_flight >= self.max_in_flight or held) and not self.paused:
            consumer.pause(*consumer.assignment())
            self.paused = True
            self.metrics.paused_partitions.set(len(consumer.assignment()))
        elif self.paused and in_flight < int(self.max_in_flight * RESUME_AT) and not held:
            # Only partitions whose attempts are restored: the others resume after theirs.
            consumer.resume(*(tp for tp in consumer.assignment() if tp in self.generation))
            self.paused = False
            self.metrics.paused_partitions.set(0)

    def _take(self, batches: dict[Any, list[Any]]) -> None:
        take = self.pipeline.take
        generation = self.generation
        now_ms = time.time() * 1000
        delay = self.metrics.intake_delay_seconds.observe
        for tp, records in batches.items():
            delay(max(0.0, now_ms - records[0].timestamp) / 1000)
            gen = generation.get(tp)
            if gen is None:
                # Not ours yet (fetched before its restore paused it: its attempts are
                # still being restored) or not ours any more (revoked):
                # handling these now could send a message to a carrier the attempts log
                # does not know of. Read them again once assigned.
                with contextlib.suppress(kafka.KafkaError, ValueError, AssertionError):
                    self.consumer.seek(tp, records[0].offset)
                continue
            key = (tp, gen)
            for r in records:
                take(key, r.topic, r.partition, r.offset, r.key, r.value)

    def pause_all(self) -> None:
        """Stop fetching (before a drain)."""
        self.consumer.pause(*self.consumer.assignment())


class Rebalance(kafka.ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, intake: RequestIntake) -> None:
        self.intake = intake

    async def on_partitions_revoked(self, revoked: set[kafka.TopicPartition]) -> None:
        await self.intake.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[kafka.TopicPartition]) -> None:
        self.intake.begin_restore(assigned)  # returns at once: aiokafka heartbeats after
