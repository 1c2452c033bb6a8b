"""One router worker: Kafka in, route, submit over MQTT, receipts out, offsets committed
only below the lowest request without a durable outcome.

The worker is the imperative shell around ``Pipeline``: it builds the Kafka producer and
sink, the carrier transport (outbox first, then the pipeline, then the connection, so
each gets its collaborators at construction) and the consumer, runs them in one task
group with the timers, and shuts down: stop intake, drain, flush, commit (``drain``).
Intake, backpressure (pausing partitions) and rebalances are ``consumer.RequestIntake``'s:
on assignment it restores the partitions' recent attempts from the attempts log
(``router.engine.attempts``) before it handles a record of theirs; on revocation it
forgets them. A component that fails (the sink, the transport, the timers) fails the task
group, and so the worker. Broker outages are ridden out: the carrier link reconnects, the
sink sends refused batches again, aiokafka reconnects the consumer. What cannot be ridden
out (a record Kafka refuses for good, a failed restore) ends the process with a non-zero
exit, loudly; the fleet or Kubernetes restarts it, and the requests it had in flight are
read again by whoever owns their partitions then (resumed at the carriers their attempts
went to).

SIGHUP reloads the network directory and swaps the route table under traffic
(``router.engine.reload``).

With ``group_instance_id`` (the fleet gives each slot one) the worker is a static member
of the group: a restarted slot gets its partitions back without a rebalance, so the
other workers never stop for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry

from router.core.decision import Router
from router.core.network import load_network
from router.engine import kafka, probes
from router.engine.attempts import AttemptMemory
from router.engine.consumer import PartitionKey, Rebalance, RequestIntake
from router.engine.metrics import BREAKER_VALUES, Metrics
from router.engine.offsets import OffsetTracker
from router.engine.pipeline import Pipeline
from router.engine.probes import Probes
from router.engine.reload import reload_on
from router.engine.settings import SettingsError, WorkerSettings
from router.engine.sink import KafkaSink
from router.engine.transports.base import Transport
from router.engine.transports.mqtt import CarrierLink, MqttOutbox
from router.engine.transports.tokens import ReplayGuard, Signer
from router.support import heap
from router.support.targets import write_target

log = structlog.get_logger("router.engine.worker")

TIMER_S = 0.01  # submit timeouts are looked at this often
HELD_S = 0.1  # held requests are tried again this often
GAUGES_S = 1.0
SLOW_RESTORE_S = 5.0  # a restore this slow is logged with its phases
CONSUMER_CLOSE_S = 5.0  # the group consumer's stop (leave the group), at most


class Flushable(Protocol):
    async def flush(self) -> None: ...


async def drain(
    intake: RequestIntake,
    tracker: OffsetTracker[PartitionKey],
    transport: Transport,
    sink: Flushable,
    timeout_s: float,
) -> None:
    """Stop fetching, finish what is in flight and publish the last acknowledgements,
    both within ``timeout_s``; then flush the sink and commit."""
    intake.pause_all()
    deadline = asyncio.get_running_loop().time() + timeout_s
    transport.flush()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await tracker.settled()
    transport.flush()  # acknowledgements of the last reports
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await transport.wait_idle()
    await sink.flush()
    await intake.commit()
    if tracker.in_flight:
        log.warning("drain deadline passed; the group re-reads the rest",
                    in_flight=tracker.in_flight)  # fmt: skip
    else:
        log.info("drained; offsets committed")


class Worker:
    def __init__(self, settings: WorkerSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.tracker: OffsetTracker[PartitionKey] = OffsetTracker()
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()  # set by SIGHUP: read the network directory again
        self.probes = Probes()  # what /healthz and /readyz report (router.engine.probes)
        self.intake: RequestIntake | None = None  # once the consumer runs

    async def read_attempts(self, partitions: list[int]) -> dict[int, list[bytes]]:
        """The attempts log's records of the dedupe window, per requests partition."""
        s = self.settings
        since = time.time_ns() // 1_000_000 - int(s.dedupe_window_s * 1000)
        phases: dict[str, float] = {}
        found = await kafka.read_partitions_since(
            s.kafka(),
            [kafka.TopicPartition(s.attempts(), p) for p in partitions],
            since,
            client_id=f"supernet-{s.instance}-restore",
            phases=phases,
        )
        if sum(phases.values()) > SLOW_RESTORE_S:
            # Restores used to stall for 30 s closing the reader (TLS, kafka.CLOSE_S): a
            # slow one says where its time went.
            log.warning("slow attempts restore", partitions=partitions,
                        **{f"{k}_s": round(v, 3) for k, v in phases.items()})  # fmt: skip
        return {tp.partition: values for tp, values in found.items()}

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        network_dir = s.network_dir()
        table = load_network(network_dir)
        router = Router(table)
        # The route table is millions of long-lived objects: move them out of the
        # collector's sight, or every full collection walks them all (on a generated
        # network that was most of the worker's time, charged to whatever ran next); and
        # collect young objects rarely enough that messages die before (router.support.heap).
        heap.settle()
        log.info("network loaded", network=str(network_dir), carriers=len(table.carriers))
        await self._ensure_topics()
        producer = kafka.producer(s.kafka(), client_id=f"supernet-{s.instance}")
        connected = self._connected
        refused = self.metrics.interconnect_refused
        async with contextlib.AsyncExitStack() as stack:
            await producer.start()
            stack.push_async_callback(kafka.close_producer, producer)
            sink = KafkaSink(
                producer, s.receipts_topic, s.dead_letter_topic, s.attempts(),
                on_state=lambda up: connected("kafka", up),
                on_ack_seconds=self.metrics.kafka_ack_seconds.observe,
            )  # fmt: skip
            connected("kafka", True)
            # The transport's outbox first, then the pipeline that submits into it, then
            # the connection that publishes the outbox and calls the pipeline back.
            secrets = s.secrets()
            mqtt = secrets.mqtt(s.mqtt_host, s.mqtt_port, s.mqtt_user)
            guard = (
                ReplayGuard(Signer(secrets.report_key()), s.report_horizon_s, s.report_memory)
                if secrets.enabled
                else None
            )
            outbox = MqttOutbox(mqtt.username or s.instance, guard)
            pipeline = Pipeline(
                router, table.carriers, outbox, sink, self.tracker, self.metrics,
                submit_timeout_s=s.submit_timeout_s, max_attempts=s.max_attempts,
                hold_limit_s=s.hold_limit_s,
                memory=AttemptMemory(s.dedupe_window_s, s.dedupe_max_ids),
            )  # fmt: skip
            link = CarrierLink(
                mqtt, s.instance, s.dlr_group, outbox, pipeline,
                on_state=lambda up: connected("mqtt", up),
                on_refused=lambda reason, n: refused.labels(reason).inc(n),
            )  # fmt: skip
            connected("mqtt", False)
            async with asyncio.TaskGroup() as tg:
                background = [
                    tg.create_task(link.run(), name="carrier-link"),
                    tg.create_task(sink.run(), name="kafka-sink"),
                    tg.create_task(self._timers(pipeline), name="timers"),
                    tg.create_task(self._gauges(router, pipeline), name="gauges"),
                    tg.create_task(
                        reload_on(
                            self.reload, router, pipeline.carriers, network_dir, self.metrics
                        ),
                        name="reload",
                    ),
                ]
                async with asyncio.timeout(30):
                    await link.wait_ready()
                consumer = self._consumer()
                await consumer.start()
                # Long enough to leave the group (the next owner need not wait for the
                # session timeout), not for TLS's close (kafka.CLOSE_S).
                stack.push_async_callback(kafka.let_go, consumer.stop, CONSUMER_CLOSE_S)
                intake = RequestIntake(
                    consumer, pipeline, self.tracker, self.metrics,
                    max_in_flight=s.max_in_flight, read_attempts=self.read_attempts,
                    stop=self.stop,
                )  # fmt: skip
                consumer.subscribe([s.requests_topic], listener=Rebalance(intake))
                self.intake = intake
                background.append(tg.create_task(self._committer(intake), name="committer"))
                log.info("worker up", instance=s.instance, group=s.group,
                         group_instance_id=s.group_instance_id or None)  # fmt: skip
                await intake.run()
                await drain(intake, self.tracker, link, sink, s.drain_timeout_s)
                for task in background:
                    task.cancel()

    def _consumer(self) -> kafka.AIOKafkaConsumer:
        s = self.settings
        static = {"group_instance_id": s.group_instance_id} if s.group_instance_id else {}
        return kafka.consumer(
            s.kafka(), s.group, client_id=f"supernet-{s.instance}",
            max_poll_interval_ms=60_000,
            # A static member that dies keeps its partitions this long: long enough for
            # the fleet to restart it (a network load takes seconds).
            session_timeout_ms=30_000 if static else 10_000,
            heartbeat_interval_ms=2_000, **static,
        )  # fmt: skip

    async def _ensure_topics(self) -> None:
        """The topics the worker needs (``kafka.ensure_pipeline``)."""
        s = self.settings
        requests, have = await kafka.ensure_pipeline(
            s.kafka(), s.requests_topic, s.receipts_topic, s.dead_letter_topic, s.attempts(),
            s.partitions,
        )  # fmt: skip
        if have < requests:
            raise SettingsError(
                f"attempts topic {s.attempts()} has {have} partitions but requests topic "
                f"{s.requests_topic} has {requests}: it needs at least as many (add partitions "
                "to it)"
            )

    async def _timers(self, pipeline: Pipeline) -> None:
        held_at = 0.0
        while True:
            await asyncio.sleep(TIMER_S)
            pipeline.expire_submits()
            now = time.monotonic()
            if pipeline.held and now - held_at >= HELD_S:
                held_at = now
                pipeline.retry_held()

    async def _committer(self, intake: RequestIntake) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            await intake.commit()

    def _connected(self, broker: str, up: bool) -> None:
        self.metrics.broker_connected.labels(broker).set(int(up))
        self.probes.connected[broker] = up

    async def _gauges(self, router: Router, pipeline: Pipeline) -> None:
        m = self.metrics
        m.worker_restarts.set(int(os.environ.get("SUPERNET_WORKER_RESTARTS", "0") or 0))
        carriers = list(pipeline.carriers)
        lagging: set[int] = set()  # partitions with a lag sample
        probes = self.probes
        while True:
            probes.beat()  # /healthz: the loop turns
            probes.draining = self.stop.is_set()
            m.in_flight.set(self.tracker.in_flight)
            m.held.set(len(pipeline.held))
            for cid in carriers:
                state = router.health.breaker(cid).value.replace("-", "_")
                m.breaker_state.labels(cid).set(BREAKER_VALUES[state])
            intake = self.intake
            if intake is not None:
                probes.assigned = len(intake.generation)
                lag = await intake.lag()
                for partition, records in lag.items():
                    m.consumer_lag.labels(str(partition)).set(records)
                for gone in lagging - lag.keys():  # revoked: no stale sample stays
                    m.consumer_lag.remove(str(gone))
                lagging = set(lag)
            await asyncio.sleep(GAUGES_S)


def serve_metrics(
    settings: WorkerSettings, registry: CollectorRegistry, state: Probes
) -> Path | None:
    """Serve /metrics, /healthz and /readyz (``router.engine.probes``); drop a Prometheus
    file-discovery target if asked. Returns its path."""
    if not settings.metrics_port:
        return None
    try:
        probes.serve(settings.metrics_host, settings.metrics_port, state, registry)
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
    loop.add_signal_handler(signal.SIGHUP, worker.reload.set)
    target = serve_metrics(settings, registry, worker.probes)
    try:
        await worker.run()
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
    return 0
