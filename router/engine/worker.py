"""One router worker: Kafka in, route, submit over MQTT, receipts out, offsets committed
only below the lowest request without a durable outcome.

The worker is the imperative shell around ``Pipeline``: it owns the Kafka consumer and
producer, the carrier link, the timers, backpressure (pausing partitions), rebalances and
shutdown. On assignment it restores the partitions' recent attempts from the attempts log
(``router.engine.attempts``) before it handles a record of theirs; on revocation it forgets
them. Broker outages are ridden out: the carrier link reconnects, the sink sends refused
batches again, aiokafka reconnects the consumer. What cannot be ridden out (a record
Kafka refuses for good, a failed restore) ends the process with a non-zero exit, loudly;
the fleet or Kubernetes restarts it, and the requests it had in flight are read again by
whoever owns their partitions then (resumed at the carriers their attempts went to).

With ``group_instance_id`` (the fleet gives each slot one) the worker is a static member
of the group: a restarted slot gets its partitions back without a rebalance, so the
other workers never stop for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from router.core.decision import Router
from router.core.network import load_network
from router.engine import attempts, kafka
from router.engine.attempts import AttemptMemory
from router.engine.metrics import BREAKER_VALUES, Metrics
from router.engine.offsets import OffsetTracker
from router.engine.pipeline import Pipeline
from router.engine.settings import SettingsError, WorkerSettings
from router.engine.sink import KafkaSink
from router.engine.transports.mqtt import CarrierLink
from router.support.targets import write_target

log = structlog.get_logger("router.engine.worker")

PartitionKey = tuple[kafka.TopicPartition, int]  # (partition, assignment generation)

TIMER_S = 0.01  # submit timeouts are looked at this often
HELD_S = 0.1  # held requests are tried again this often
GAUGES_S = 1.0
RESUME_AT = 0.75  # intake resumes below this share of max_in_flight
REVOKE_DRAIN_S = 5.0  # how long a rebalance waits for the revoked partitions' work


class Rebalance(kafka.ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[kafka.TopicPartition]) -> None:
        await self.worker.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[kafka.TopicPartition]) -> None:
        try:
            await self.worker.restore(assigned)
        except Exception as e:  # aiokafka would log and go on: without the attempts, no
            self.worker.fatal = e  # record of these partitions may be routed, so stop
            return
        self.worker.assign(assigned)


class Worker:
    def __init__(self, settings: WorkerSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.tracker: OffsetTracker[PartitionKey] = OffsetTracker()
        self.generation: dict[kafka.TopicPartition, int] = {}  # tp -> current assignment's key
        self._generations = 0
        self.paused = False
        self.stop = asyncio.Event()
        self.consumer: kafka.AIOKafkaConsumer | None = None
        self.pipeline: Pipeline | None = None
        self.fatal: BaseException | None = None  # set by a callback that cannot raise

    # -- partitions and offsets ---------------------------------------------------------

    def assign(self, assigned: set[kafka.TopicPartition]) -> None:
        # Records are tracked per (partition, generation): outcomes that finish after a
        # partition was revoked (and maybe assigned back) never touch the new bookkeeping.
        for tp in assigned:
            self._generations += 1
            self.generation[tp] = self._generations
        self.paused = False
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    async def restore(self, assigned: set[kafka.TopicPartition]) -> None:
        """Read the assigned partitions' attempts of the dedupe window back into memory."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        s = self.settings
        since = time.time_ns() // 1_000_000 - int(s.dedupe_window_s * 1000)
        started = time.monotonic()
        total = 0
        found = await kafka.read_partitions_since(
            s.bootstrap,
            [kafka.TopicPartition(s.attempts(), tp.partition) for tp in assigned],
            since,
            client_id=f"supernet-{s.instance}-restore",
        )
        for tp, values in sorted(found.items(), key=lambda x: x[0].partition):
            records = []
            for value in values:
                try:
                    records.append(attempts.DECODER.decode(value))
                except ValueError:
                    log.warning("undecodable attempt record skipped", partition=tp.partition)
            pipeline.restore(tp.partition, records)
            total += len(records)
        self.metrics.attempts_restored.inc(total)
        log.info("attempts restored", partitions=sorted(tp.partition for tp in assigned),
                 records=total, seconds=round(time.monotonic() - started, 3))  # fmt: skip

    async def revoke(self, revoked: set[kafka.TopicPartition]) -> None:
        keys = [(tp, self.generation[tp]) for tp in revoked if tp in self.generation]
        deadline = time.monotonic() + REVOKE_DRAIN_S
        # Polls counters that the outcome callbacks update; 20 ms is fine for a rebalance.
        while any(self.tracker.pending(k) for k in keys) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        offsets: dict[kafka.TopicPartition, int] = {}
        for key in keys:
            offset = self.tracker.committable(key)
            if offset is not None:
                offsets[key[0]] = offset
        if offsets and self.consumer is not None:
            try:
                await self.consumer.commit(offsets)
            except (kafka.CommitFailedError, kafka.KafkaError) as e:
                log.warning("commit on revoke failed; the new owner re-reads", error=str(e))
        abandoned = sum(self.tracker.forget(k) for k in keys)
        for tp in revoked:
            self.generation.pop(tp, None)
        if self.pipeline is not None:
            self.pipeline.forget({tp.partition for tp in revoked})
        log.info("partitions revoked", partitions=sorted(tp.partition for tp in revoked),
                 abandoned_in_flight=abandoned)  # fmt: skip

    async def commit(self) -> None:
        if self.consumer is None:
            return  # not consuming yet
        current = {(tp, gen) for tp, gen in self.generation.items()}
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

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        network_dir = s.network_dir()
        table = load_network(network_dir)
        router = Router(table)
        # The route table is millions of long-lived objects: move them out of the
        # collector's sight, or every full collection walks them all (on a generated
        # network that was most of the worker's time, charged to whatever ran next).
        gc.collect()
        gc.freeze()
        log.info("network loaded", network=str(network_dir), carriers=len(table.carriers))
        await self._ensure_topics()
        producer = kafka.producer(s.bootstrap, client_id=f"supernet-{s.instance}")
        connected = self.metrics.broker_connected
        async with contextlib.AsyncExitStack() as stack:
            await producer.start()
            stack.push_async_callback(producer.stop)
            sink = KafkaSink(
                producer, s.receipts_topic, s.dead_letter_topic, s.attempts(),
                on_state=lambda up: connected.labels("kafka").set(int(up)),
            )  # fmt: skip
            connected.labels("kafka").set(1)
            link = CarrierLink(
                s.mqtt_host, s.mqtt_port, s.instance, s.dlr_group,
                on_state=lambda up: connected.labels("mqtt").set(int(up)),
            )  # fmt: skip
            connected.labels("mqtt").set(0)
            pipeline = self.pipeline = Pipeline(
                router, table.carriers, link, sink, self.tracker, self.metrics,
                submit_timeout_s=s.submit_timeout_s, max_attempts=s.max_attempts,
                hold_limit_s=s.hold_limit_s,
                memory=AttemptMemory(s.dedupe_window_s, s.dedupe_max_ids),
            )  # fmt: skip
            link.handler = pipeline
            async with asyncio.TaskGroup() as tg:
                background = [
                    tg.create_task(link.run(), name="carrier-link"),
                    tg.create_task(sink.run(), name="kafka-sink"),
                    tg.create_task(sink.failed(), name="kafka-sink-watch"),
                    tg.create_task(self._timers(pipeline), name="timers"),
                    tg.create_task(self._committer(), name="committer"),
                    tg.create_task(self._gauges(router, list(table.carriers)), name="gauges"),
                ]
                async with asyncio.timeout(30):
                    await link.ready.wait()
                static = {"group_instance_id": s.group_instance_id} if s.group_instance_id else {}
                consumer = self.consumer = kafka.consumer(
                    s.bootstrap, s.group, client_id=f"supernet-{s.instance}",
                    max_poll_interval_ms=60_000,
                    # A static member that dies keeps its partitions this long: long enough
                    # for the fleet to restart it (a network load takes seconds).
                    session_timeout_ms=30_000 if static else 10_000,
                    heartbeat_interval_ms=2_000, **static,
                )  # fmt: skip
                await consumer.start()
                stack.push_async_callback(consumer.stop)
                consumer.subscribe([s.requests_topic], listener=Rebalance(self))
                log.info("worker up", instance=s.instance, group=s.group,
                         group_instance_id=s.group_instance_id or None)  # fmt: skip
                await self._intake(consumer, pipeline)
                await self._drain(link, sink)
                for task in background:
                    task.cancel()

    async def _ensure_topics(self) -> None:
        """The topics the worker needs; the attempts log gets as many partitions as the
        requests topic (request partition p -> attempts partition p)."""
        s = self.settings
        bootstrap = s.bootstrap
        plain = (s.requests_topic, s.receipts_topic, s.dead_letter_topic)
        await kafka.ensure_topics(bootstrap, [kafka.TopicSpec(t, s.partitions) for t in plain])
        counts = await kafka.partition_counts(bootstrap, [s.requests_topic, s.attempts()])
        requests = counts.get(s.requests_topic, s.partitions)
        # Kept a day: far longer than any dedupe window; compaction keeps the latest per id.
        await kafka.ensure_topics(
            bootstrap, [kafka.compacted(s.attempts(), requests, 24 * 3600 * 1000)]
        )
        have = counts.get(s.attempts(), requests)
        if have < requests:
            raise SettingsError(
                f"attempts topic {s.attempts()} has {have} partitions but requests topic "
                f"{s.requests_topic} has {requests}: it needs at least as many (add partitions "
                "to it)"
            )

    async def _intake(self, consumer: kafka.AIOKafkaConsumer, pipeline: Pipeline) -> None:
        s = self.settings
        tracker = self.tracker
        high, low = s.max_in_flight, int(s.max_in_flight * RESUME_AT)
        take = pipeline.take
        observe = self.metrics.decision_seconds.observe
        while not self.stop.is_set():
            if self.fatal is not None:
                raise RuntimeError("restoring attempts on assignment failed") from self.fatal
            busy = tracker.in_flight >= high or bool(pipeline.held)
            if busy and not self.paused:
                consumer.pause(*consumer.assignment())
                self.paused = True
                self.metrics.paused_partitions.set(len(consumer.assignment()))
            elif self.paused and tracker.in_flight < low and not pipeline.held:
                consumer.resume(*consumer.assignment())
                self.paused = False
                self.metrics.paused_partitions.set(0)
            room = max(1, high - tracker.in_flight)
            # Modest slices keep the loop responsive to results and acknowledgements.
            batches = await consumer.getmany(timeout_ms=100, max_records=min(room, 500))
            generation = self.generation
            for tp, records in batches.items():
                gen = generation.get(tp)
                if gen is None:
                    # Not ours yet (aiokafka fetches as soon as a partition is assigned,
                    # while its attempts are still being restored) or not ours any more
                    # (revoked): handling these now could send a message to a carrier the
                    # attempts log does not know of. Read them again once assigned.
                    with contextlib.suppress(kafka.KafkaError, ValueError, AssertionError):
                        consumer.seek(tp, records[0].offset)
                    continue
                key = (tp, gen)
                for r in records:
                    take(key, r.topic, r.partition, r.offset, r.key, r.value)
            if pipeline.decisions:
                observe(pipeline.decision_time / pipeline.decisions)
                pipeline.decision_time = 0.0
                pipeline.decisions = 0
        log.info("intake stopped", in_flight=tracker.in_flight)

    async def _drain(self, link: CarrierLink, sink: KafkaSink) -> None:
        """Finish what is in flight under the deadline, flush, commit."""
        assert self.consumer is not None
        self.consumer.pause(*self.consumer.assignment())
        deadline = time.monotonic() + self.settings.drain_timeout_s
        link.flush_all()
        while self.tracker.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        link.flush_all()  # acknowledgements of the last reports
        while link.queued and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await sink.flush()
        await self.commit()
        if self.tracker.in_flight:
            log.warning("drain deadline passed; the group re-reads the rest",
                        in_flight=self.tracker.in_flight)  # fmt: skip
        else:
            log.info("drained; offsets committed")

    async def _timers(self, pipeline: Pipeline) -> None:
        held_at = 0.0
        while True:
            await asyncio.sleep(TIMER_S)
            pipeline.expire_submits()
            now = time.monotonic()
            if pipeline.held and now - held_at >= HELD_S:
                held_at = now
                pipeline.retry_held()

    async def _committer(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            await self.commit()

    async def _gauges(self, router: Router, carriers: list[str]) -> None:
        m = self.metrics
        m.worker_restarts.set(int(os.environ.get("SUPERNET_WORKER_RESTARTS", "0") or 0))
        while True:
            m.in_flight.set(self.tracker.in_flight)
            if self.pipeline is not None:
                m.held.set(len(self.pipeline.held))
            for cid in carriers:
                state = router.health.breaker(cid).value.replace("-", "_")
                m.breaker_state.labels(cid).set(BREAKER_VALUES[state])
            await asyncio.sleep(GAUGES_S)


def serve_metrics(settings: WorkerSettings, registry: CollectorRegistry) -> Path | None:
    """Serve /metrics; drop a Prometheus file-discovery target if asked. Returns its path."""
    if not settings.metrics_port:
        return None
    try:
        start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
    except OSError as e:
        raise SettingsError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} ({e}); "
            "choose another --metrics-port, or 0 for none"
        ) from None
    if not settings.prometheus_targets:
        return None
    return write_target(
        Path(settings.prometheus_targets),
        f"worker-{settings.instance}",
        settings.metrics_host,
        settings.metrics_port,
        {"worker": settings.instance},
    )


async def main(settings: WorkerSettings) -> int:
    registry = CollectorRegistry()
    worker = Worker(settings, registry)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    target = serve_metrics(settings, registry)
    try:
        await worker.run()
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
    return 0
