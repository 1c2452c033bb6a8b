"""The worker's consumer side without Kafka: a fake consumer under ``RequestIntake``, the
real pipeline (``World``'s fakes for the sink and the carriers) and the real tracker.

Backpressure (intake pauses at ``max_in_flight`` and resumes below ``RESUME_AT`` of it),
commits, rebalances (a revoke waits for the partition's work and commits; an assignment
restores the attempts before any record of the partition is handled) and the drain.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from aiokafka.errors import CommitFailedError

from router.engine import attempts, worker
from router.engine.attempts import AttemptRecord
from router.engine.consumer import Rebalance, RequestIntake
from router.engine.kafka import TopicPartition
from tests.router.engine.fakes import ES_NONE, GB_MULTI, World, request

TP = TopicPartition("sms.requests", 0)
OTHER = TopicPartition("sms.requests", 1)


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0  # ms, as aiokafka's ConsumerRecord has it


class FakeConsumer:
    """Partitions of records, positions, pauses and commits, as aiokafka keeps them."""

    def __init__(self) -> None:
        self.log: dict[Any, list[Rec]] = {}
        self.positions: dict[Any, int] = {}
        self.assigned: set[Any] = set()
        self.paused: set[Any] = set()
        self.commits: list[dict[Any, int]] = []
        self.fail_commits: list[Exception] = []
        self.seeks: list[tuple[Any, int]] = []
        self.polls = 0

    def add(self, tp: Any, *values: bytes) -> None:
        records = self.log.setdefault(tp, [])
        self.positions.setdefault(tp, 0)
        for value in values:
            records.append(Rec(tp.topic, tp.partition, len(records), b"k", value))

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def highwater(self, tp: Any) -> int | None:
        return len(self.log[tp]) if tp in self.log else None

    async def position(self, tp: Any) -> int:
        return self.positions[tp]

    def pause(self, *partitions: Any) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: Any) -> None:
        self.paused.difference_update(partitions)

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[Any, list[Any]]:
        self.polls += 1
        room = max_records or 1 << 30
        out: dict[Any, list[Any]] = {}
        for tp in sorted(self.assigned - self.paused):
            records = self.log.get(tp, [])[self.positions[tp] :][:room]
            if records:
                out[tp] = records
                self.positions[tp] += len(records)
                room -= len(records)
        await asyncio.sleep(0 if out else 0.002)
        return out

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.positions[partition] = offset

    async def commit(self, offsets: dict[Any, int]) -> None:
        if self.fail_commits:
            raise self.fail_commits.pop(0)
        self.commits.append(dict(offsets))


class Shell:
    """A ``World`` pipeline behind a ``RequestIntake`` over a ``FakeConsumer``."""

    def __init__(self, *, max_in_flight: int = 100, revoke_drain_s: float = 5.0) -> None:
        self.world = World()
        self.consumer = FakeConsumer()
        self.stop = asyncio.Event()
        self.stored: dict[int, list[bytes]] = {}  # the attempts log, per partition
        self.restoring = asyncio.Event()
        self.restoring.set()  # cleared: a restore waits until it is set
        self.restore_error: Exception | None = None
        self.intake = RequestIntake(
            self.consumer, self.world.pipeline, self.world.tracker, self.world.metrics,
            max_in_flight=max_in_flight, read_attempts=self.read_attempts, stop=self.stop,
            revoke_drain_s=revoke_drain_s,
        )  # fmt: skip
        self.rebalance = Rebalance(self.intake)

    async def read_attempts(self, partitions: list[int]) -> dict[int, list[bytes]]:
        await self.restoring.wait()
        if self.restore_error is not None:
            raise self.restore_error
        return {p: self.stored.get(p, []) for p in partitions}

    async def assign(self, *tps: Any) -> None:
        self.consumer.assigned.update(tps)
        for tp in tps:
            self.consumer.positions.setdefault(tp, 0)
        await self.rebalance.on_partitions_assigned(set(tps))
        if self.restoring.is_set() and self.restore_error is None:  # the restore can end
            await until(lambda: all(tp in self.intake.generation for tp in tps))

    @property
    def outcomes(self) -> list[Any]:
        return self.world.sink.outcomes

    def ack(self, n: int) -> None:
        for record in self.world.sink.unacked()[:n]:
            self.world.sink.ack(record)


def sample(shell: Shell, name: str) -> float | None:
    return shell.world.metrics.registry.get_sample_value(name)


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - a test watching the intake loop
            await asyncio.sleep(0.002)


def refused(i: int) -> bytes:
    """A request no carrier reaches: failed at once, its receipt waits for the ack."""
    return request(f"m{i}", to=ES_NONE)


# --- backpressure -------------------------------------------------------------------------


async def test_intake_pauses_at_max_in_flight_and_resumes_below_three_quarters() -> None:
    shell = Shell(max_in_flight=4)
    await shell.assign(TP)
    shell.consumer.add(TP, *(refused(i) for i in range(10)))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: shell.consumer.paused == {TP})
        assert shell.world.tracker.in_flight == 4  # never more than the cap
        assert len(shell.outcomes) == 4
        polls = shell.consumer.polls
        await until(lambda: shell.consumer.polls > polls + 5)
        assert len(shell.outcomes) == 4  # nothing more while paused
        shell.ack(1)  # 3 in flight: not below 3 yet
        polls = shell.consumer.polls
        await until(lambda: shell.consumer.polls > polls + 5)
        assert shell.consumer.paused == {TP}
        assert len(shell.outcomes) == 4  # still paused: nothing more was taken
        shell.ack(1)  # 2 in flight: resumes
        await until(lambda: len(shell.outcomes) == 6)
        assert shell.world.tracker.in_flight == 4
        shell.stop.set()
    assert sample(shell, "supernet_paused_partitions") == 1


async def test_lag_counts_what_kafka_holds_beyond_the_last_record_taken() -> None:
    shell = Shell(max_in_flight=4)
    await shell.assign(TP)
    shell.consumer.add(TP, *(refused(i) for i in range(10)))
    assert await shell.intake.lag() == {TP.partition: 10}  # nothing taken yet
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: shell.consumer.paused == {TP})  # 4 taken: at the cap
        assert await shell.intake.lag() == {TP.partition: 6}

        # Kafka acknowledges as it goes: every outcome is durable, all are taken.
        def all_durable() -> bool:
            shell.ack(10)
            return len(shell.outcomes) == 10

        await until(all_durable)
        assert await shell.intake.lag() == {TP.partition: 0}
        shell.stop.set()
    await shell.rebalance.on_partitions_revoked({TP})
    assert await shell.intake.lag() == {}  # not ours: no sample


async def test_a_held_request_pauses_intake_until_it_is_no_longer_held() -> None:
    shell = Shell()
    await shell.assign(TP)
    shell.world.pipeline.held.append(object())  # type: ignore[arg-type]
    shell.consumer.add(TP, refused(1))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: shell.consumer.paused == {TP})
        assert shell.outcomes == []
        shell.world.pipeline.held.clear()
        await until(lambda: len(shell.outcomes) == 1)
        shell.stop.set()
    assert shell.consumer.paused == set()


# --- commits ------------------------------------------------------------------------------


async def test_commit_moves_only_below_the_lowest_record_without_a_durable_outcome() -> None:
    shell = Shell()
    await shell.assign(TP)
    shell.consumer.add(TP, *(refused(i) for i in range(3)))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: len(shell.outcomes) == 3)
        shell.stop.set()
    sink = shell.world.sink
    sink.ack(sink.outcomes[1])
    await shell.intake.commit()
    assert shell.consumer.commits == [{TP: 0}]
    sink.ack(sink.outcomes[0])
    await shell.intake.commit()
    await shell.intake.commit()  # nothing moved: no commit
    assert shell.consumer.commits == [{TP: 0}, {TP: 2}]
    assert sample(shell, "supernet_offset_commits_total") == 2


async def test_a_failed_commit_is_committed_again_by_the_next_one() -> None:
    shell = Shell()
    await shell.assign(TP)
    shell.consumer.add(TP, refused(1))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: len(shell.outcomes) == 1)
        shell.stop.set()
    shell.ack(1)
    shell.consumer.fail_commits = [CommitFailedError("rebalancing"), OSError("gone")]
    await shell.intake.commit()
    await shell.intake.commit()
    assert shell.consumer.commits == []
    await shell.intake.commit()
    assert shell.consumer.commits == [{TP: 1}]


# --- rebalances ---------------------------------------------------------------------------


async def test_a_revoke_waits_for_the_partitions_work_then_commits_and_forgets() -> None:
    shell = Shell()
    await shell.assign(TP, OTHER)
    shell.consumer.add(TP, refused(1), refused(2))
    shell.consumer.add(OTHER, refused(3))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: len(shell.outcomes) == 3)
        shell.stop.set()
    sink = shell.world.sink
    revoke = asyncio.create_task(shell.rebalance.on_partitions_revoked({TP}))
    await asyncio.sleep(0.05)
    assert not revoke.done()  # m1 and m2 are in flight
    sink.ack(sink.outcomes[0])
    await asyncio.sleep(0.05)
    assert not revoke.done()
    sink.ack(sink.outcomes[1])  # OTHER's m3 stays in flight: no matter
    async with asyncio.timeout(1):
        await revoke
    assert shell.consumer.commits == [{TP: 2}]
    assert TP not in shell.intake.generation
    assert OTHER in shell.intake.generation
    assert shell.world.tracker.in_flight == 1


async def test_a_revoke_gives_up_waiting_after_its_limit_and_commits_what_it_can() -> None:
    shell = Shell(revoke_drain_s=0.05)
    await shell.assign(TP)
    shell.consumer.add(TP, refused(1), refused(2))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: len(shell.outcomes) == 2)
        shell.stop.set()
    sink = shell.world.sink
    sink.ack(sink.outcomes[0])
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(1):
            await shell.rebalance.on_partitions_revoked({TP})
    assert shell.consumer.commits == [{TP: 1}]  # m2 never became durable here
    [revoked] = [e for e in logs if e["event"] == "partitions revoked"]
    assert revoked["abandoned_in_flight"] == 1
    assert shell.world.tracker.in_flight == 0
    sink.ack(sink.outcomes[1])  # its outcome lands later: the forgotten partition ignores it
    assert shell.world.tracker.in_flight == 0


async def test_records_of_a_partition_being_restored_wait_for_its_attempts() -> None:
    shell = Shell()
    sent = AttemptRecord(
        id="m1", state=attempts.SENT, carrier="gb-ee", attempt=1, kind="direct",
        price=0.02, segments=1, encoding="GSM-7", ts=shell.world.wall.ms,
    )  # fmt: skip
    shell.stored[0] = [attempts.ENCODER.encode(sent), b"\xff not an attempt"]
    shell.restoring.clear()
    shell.consumer.assigned.add(TP)  # aiokafka fetches before the listener has finished
    shell.consumer.positions[TP] = 0
    shell.consumer.add(TP, request("m1", to=GB_MULTI))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: shell.consumer.polls >= 2)  # fetched, not ours yet: put back
        assert shell.consumer.seeks[0] == (TP, 0)
        # The callback returns at once (aiokafka heartbeats only after it), the partition
        # paused while its attempts are read.
        async with asyncio.timeout(1):
            await shell.rebalance.on_partitions_assigned({TP})
        polls = shell.consumer.polls
        await until(lambda: shell.consumer.polls >= polls + 5)
        assert TP in shell.consumer.paused
        assert TP not in shell.intake.generation
        assert shell.world.tracker.in_flight == 0
        shell.restoring.set()
        await until(lambda: len(shell.outcomes) == 1)
        assert TP not in shell.consumer.paused
        shell.stop.set()
    [receipt] = shell.world.sink.receipts
    assert (receipt.status, receipt.carrier) == ("sent", "gb-ee")  # answered, not sent again
    assert shell.world.link.submits == []
    assert sample(shell, "supernet_attempts_restored_total") == 1


async def test_a_revoke_during_a_restore_cancels_it_and_the_partition_stays_unrouted() -> None:
    shell = Shell()
    shell.restoring.clear()  # the attempts log does not answer
    shell.consumer.add(TP, request("m1", to=GB_MULTI))
    await shell.assign(TP)
    assert TP in shell.consumer.paused
    async with asyncio.timeout(1):
        await shell.rebalance.on_partitions_revoked({TP})
    shell.restoring.set()
    shell.consumer.paused.discard(TP)  # a new owner's fetch, say: still not ours here
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: shell.consumer.polls >= 5)
        shell.stop.set()
    assert TP not in shell.intake.generation
    assert shell.world.tracker.in_flight == 0
    assert shell.outcomes == []


async def test_backpressure_resumes_only_partitions_whose_attempts_are_restored() -> None:
    shell = Shell()
    restored, restoring = TP, type(TP)(TP.topic, TP.partition + 1)
    await shell.assign(restored)
    shell.restoring.clear()
    await shell.assign(restoring)
    shell.intake.paused = True  # backpressure had paused every partition
    shell.consumer.pause(restored, restoring)
    shell.intake._backpressure()  # nothing in flight: resume
    assert shell.consumer.paused == {restoring}
    shell.restoring.set()
    await until(lambda: restoring in shell.intake.generation)
    await shell.intake.cancel_restores()


async def test_a_failed_restore_stops_intake_loudly() -> None:
    shell = Shell()
    shell.restore_error = OSError("the attempts topic is away")
    await shell.assign(TP)
    assert TP not in shell.intake.generation
    with pytest.raises(RuntimeError, match="restoring attempts"):
        async with asyncio.timeout(1):
            await shell.intake.run()


# --- the drain ----------------------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.flushes = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def run(self) -> None:
        return None

    async def wait_ready(self) -> None:
        return None

    def flush(self) -> None:
        self.flushes += 1

    @property
    def queued(self) -> int:
        return 0 if self.idle.is_set() else 1

    async def wait_idle(self) -> None:
        await self.idle.wait()


class FlushSink:
    def __init__(self) -> None:
        self.flushed = 0

    async def flush(self) -> None:
        self.flushed += 1


async def test_the_drain_waits_for_in_flight_work_then_flushes_and_commits() -> None:
    shell = Shell()
    await shell.assign(TP)
    shell.consumer.add(TP, refused(1))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: len(shell.outcomes) == 1)
        shell.stop.set()
    transport, sink = FakeTransport(), FlushSink()
    transport.idle.clear()
    with structlog.testing.capture_logs() as logs:
        draining = asyncio.create_task(
            worker.drain(shell.intake, shell.world.tracker, transport, sink, timeout_s=5.0)
        )
        await asyncio.sleep(0.02)
        assert shell.consumer.paused == {TP}
        assert transport.flushes == 1
        assert not draining.done()
        shell.ack(1)
        await asyncio.sleep(0.02)
        assert transport.flushes == 2  # the last reports' acknowledgements
        assert not draining.done()  # they are still being published
        transport.idle.set()
        async with asyncio.timeout(1):
            await draining
    assert sink.flushed == 1
    assert shell.consumer.commits == [{TP: 1}]
    assert "drained; offsets committed" in [e["event"] for e in logs]


async def test_the_drain_gives_up_at_its_deadline_and_commits_what_is_durable() -> None:
    shell = Shell()
    await shell.assign(TP)
    shell.consumer.add(TP, refused(1), refused(2))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.intake.run())
        await until(lambda: len(shell.outcomes) == 2)
        shell.stop.set()
    shell.ack(1)
    transport, sink = FakeTransport(), FlushSink()
    transport.idle.clear()  # never idle either
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(2):
            await worker.drain(shell.intake, shell.world.tracker, transport, sink, 0.05)
    assert shell.consumer.commits == [{TP: 1}]
    assert sink.flushed == 1
    [late] = [e for e in logs if e["event"].startswith("drain deadline passed")]
    assert late["in_flight"] == 1


def test_a_request_no_carrier_reaches_fails_at_once() -> None:
    """The helper these tests lean on: its receipt is an outcome at once."""
    w = World()
    w.take(refused(1))
    assert [r.status for r in w.sink.receipts] == ["failed"]
