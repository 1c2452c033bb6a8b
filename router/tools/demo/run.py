"""The demo's shell: brokers, network, carriers with an outage, a fleet, load, receipts.

Steps (each one prints what it does):

1. Brokers: ``supernet infra up`` for those not running (remembered, so that only those
   are stopped at the end); skipped with ``infra=False`` (the tests' shared brokers).
2. Network: ``supernet network generate --seed S`` into ``OUT/network`` unless a network
   of the same seed is there already (or one is given).
3. The busy carrier: the routing core (``Router.decide``, advertised health) over a
   sample of the load generator's own traffic; the carrier it picks most goes offline.
4. ``supernet fleet --workers N`` (metrics on ``--metrics-port`` + i, registered with
   Prometheus through its file-discovery directory), then ``supernet carriers`` with a
   generated scenario: the busy carrier offline from half the load for a quarter of it.
5. The load (``router.tools.load``'s producer, in this process, with its progress bar), at
   ``rate`` for ``duration`` seconds, ids ``<prefix>*``; it waits for outcomes and
   delivery reports like ``supernet load`` does.
6. Every request and receipt of the run, read back from Kafka between the offsets noted
   before and after; the outage's real start and end from the carriers' log.
7. Fleet and carriers stopped (SIGTERM, then wait); the economics baselines; the summary
   (``summary.summarize``) printed and written as JSON, and the plots.

Whatever happens (an error, Ctrl-C), the processes it started are stopped by pid, and the
brokers it started are stopped unless ``keep``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import uvloop
from rich.console import Console

from router.contracts import network_file, wire
from router.engine import kafka
from router.support.infra_settings import InfraSettings
from router.tools.demo import plots
from router.tools.demo.render import render
from router.tools.demo.summary import (
    DemoSummary,
    Outage,
    PolicyFigures,
    collate,
    latency_series,
    share_series,
    summarize,
)
from router.tools.infra.brokers import BROKERS, Prometheus
from router.tools.load.mix import Mix
from router.tools.load.numbers import NumberPlan, build_plan
from router.tools.load.pace import Pacer
from router.tools.load.report import Summary as LoadSummary
from router.tools.load.run import LoadConfig, run_load
from router.tools.load.traffic import Traffic

BUSY_SAMPLE = 20_000  # requests of the load's traffic that pick the busy carrier
FLEET_START_S = 120.0
CARRIERS_START_S = 120.0
FLEET_STOP_S = 60.0
CARRIERS_STOP_S = 30.0
LEAD_S = 1.0  # from the carriers being ready to the first request
CARRIERS_METRICS_PORT = 19480  # the carriers' ledger as Prometheus metrics


class DemoError(Exception):
    """A step of the demo failed; the message says which and where its log is."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    out: Path = Path("out/demo")
    rate: float = 1000.0
    duration: float = 60.0
    workers: int = 2
    seed: int = 1
    network: Path | None = None  # None: generate (or reuse) OUT/network with ``seed``
    infra: bool = True  # bring the brokers up, and down again if this run started them
    keep: bool = False  # leave the brokers this run started running
    economics: bool = True
    economics_count: int = 20_000
    outage_s: float | None = None  # None: a quarter of the duration
    wait_s: float = 15.0
    metrics_port: int = 19400  # 0: no /metrics
    requests_topic: str = "sms.requests"
    receipts_topic: str = "sms.receipts"
    dead_letter_topic: str = "sms.dead-letter"
    group: str = "supernet-routers"
    dlr_group: str = "routers"
    id_prefix: str | None = None  # None: demo<seed>-<random>-
    infra_settings: InfraSettings = field(default_factory=InfraSettings.from_env)

    @property
    def outage_duration_s(self) -> float:
        return self.outage_s if self.outage_s is not None else self.duration / 4


# -- child processes ------------------------------------------------------------------


@dataclass
class Child:
    """A `supernet` subcommand run as a child process, its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # A fresh log per run: waiting counts lines in it, and an earlier run's
        # "partitions assigned" must not pass for this one's.
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(self, needle: str, timeout_s: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while self.text().count(needle) < count:
            if self.proc is None or self.proc.poll() is not None:
                raise DemoError(
                    f"{self.name} exited before {needle!r}; log {self.log}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{self.name}: no {needle!r} within {timeout_s:.0f} s; "
                    f"log {self.log}:\n{self.tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM and wait; SIGKILL past ``timeout_s``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)


# -- steps ----------------------------------------------------------------------------


def brokers_up(settings: InfraSettings, console: Console) -> list[str]:
    """Start the brokers that are not running; returns the names of those started."""
    from router.tools.infra.lifecycle import up

    started = [name for name, cls in BROKERS.items() if cls(settings).proc.pid() is None]
    up(settings, list(BROKERS))
    if not started:
        console.print("demo: brokers already running; they stay up at the end")
    return started


def brokers_down(settings: InfraSettings, names: Sequence[str]) -> None:
    from router.tools.infra.lifecycle import down

    down(settings, names)


def ensure_network(config: DemoConfig, console: Console) -> Path:
    if config.network is not None:
        network_file.load(config.network)  # fails early with a clear message
        return config.network
    directory = config.out / "network"
    try:
        if network_file.load(directory).seed == config.seed:
            console.print(f"demo: network of seed {config.seed} in {directory} (reused)")
            return directory
    except network_file.NetworkFileError:
        pass
    argv = [
        sys.executable,
        "-m",
        "router",
        "network",
        "generate",
        "--seed",
        str(config.seed),
        "--out",
        str(directory),
    ]
    console.print(f"demo: supernet network generate --seed {config.seed} --out {directory}")
    result = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise DemoError(f"network generation failed (exit {result.returncode})")
    return directory


def busy_carrier(
    network: Path, plan: NumberPlan, seed: int, rate: float, sample: int = BUSY_SAMPLE
) -> tuple[str, float]:
    """The carrier the routing core picks most for the load's traffic, and its share.

    The sample is the load's own request sequence (same seed and mix), decided at the
    load's pace (``now`` advances 1/rate per request) so that throttles act as they will.
    """
    from router.core.decision import Router
    from router.core.network import load_network
    from router.core.policy import CLASS_INDEX

    router = Router(load_network(network))
    traffic = Traffic(plan, Mix(), seed, "busy-")
    picks: Counter[str] = Counter()
    for i in range(sample):
        r = traffic.next(0)
        d = router.decide(r.to, r.body, CLASS_INDEX[r.cls], r.max_price, i / rate)
        if d.carrier is not None:
            picks[d.carrier] += 1
    if not picks:
        raise DemoError(f"{network}: the routing core routes none of the load's traffic")
    carrier, n = min(picks.items(), key=lambda kv: (-kv[1], kv[0]))
    return carrier, n / sum(picks.values())


def scenario_text(carrier: str, at_s: float, duration_s: float) -> str:
    return (
        f'name = "supernet demo: {carrier} offline halfway through the load"\n\n'
        "[[events]]\n"
        'kind = "offline"\n'
        f"at = {at_s:.3f}\n"
        f'carriers = "{carrier}"\n'
        f"duration = {duration_s:.3f}\n"
    )


def outage_from_log(text: str, carrier: str) -> tuple[int | None, int | None]:
    """Wall-clock ms of the outage's start and end, from the carriers' JSON log."""
    start = end = None
    for line in text.splitlines():
        if '"scenario step"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        step = str(entry.get("step", ""))
        if not step.endswith(f"Offline on {carrier}"):
            continue
        ms = int(dt.datetime.fromisoformat(str(entry["timestamp"])).timestamp() * 1000)
        if step.startswith("start"):
            start = ms
        elif step.startswith("end"):
            end = ms
    return start, end


# -- Kafka ----------------------------------------------------------------------------


async def _partitions(bootstrap: str, topic: str) -> list[kafka.TopicPartition]:
    """The topic's partitions (a producer's ``partitions_for`` waits for metadata)."""
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        partitions = await producer.partitions_for(topic)
    finally:
        await producer.stop()
    return [kafka.TopicPartition(topic, p) for p in sorted(partitions)]


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    tps = await _partitions(bootstrap, topic)
    consumer = kafka.consumer(bootstrap, None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def skip_backlog(bootstrap: str, topic: str, group: str) -> int:
    """Commit ``group``'s offsets at the end of ``topic``: requests an earlier, interrupted
    run left unanswered are skipped, so this run measures only its own traffic. Returns
    how many were skipped."""
    tps = await _partitions(bootstrap, topic)
    consumer = kafka.consumer(bootstrap, group)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        skipped: int = sum(end - (committed[tp] or 0) for tp, end in ends.items())
        if ends:
            await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()
    return skipped


async def read_between(
    bootstrap: str, topic: str, start: dict[int, int]
) -> tuple[list[bytes], dict[int, int]]:
    """Every record value of ``topic`` from ``start`` (per partition; missing: from the
    beginning) up to the end offsets at the time of the call, and those end offsets."""
    tps = await _partitions(bootstrap, topic)
    consumer = kafka.consumer(bootstrap, None, max_poll_records=10_000)
    await consumer.start()
    out: list[bytes] = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        todo = set()
        for tp in tps:
            begin = max(start.get(tp.partition, 0), firsts[tp])
            if begin < ends[tp]:
                consumer.seek(tp, begin)
                todo.add(tp)
            else:
                consumer.pause(tp)
        while todo:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp] and r.value is not None:
                        out.append(r.value)
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return out, {tp.partition: offset for tp, offset in ends.items()}


def decode_requests(values: Sequence[bytes], prefix: str) -> dict[str, int]:
    """id -> created_at of this run's requests (ids starting with ``prefix``)."""
    created: dict[str, int] = {}
    for v in values:
        try:
            r = wire.decode_request(v)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
        if r.id.startswith(prefix) and r.created_at is not None:
            created.setdefault(r.id, r.created_at)
    return created


def decode_receipts(values: Sequence[bytes]) -> list[wire.Receipt]:
    out = []
    for v in values:
        try:
            out.append(wire.RECEIPT_DECODER.decode(v))
        except msgspec.DecodeError:
            continue
    return out


# -- metrics --------------------------------------------------------------------------

PROMETHEUS_QUERY = "sum by (status) (rate(supernet_receipts_total[15s]))"


def metrics_urls(config: DemoConfig) -> tuple[str, list[str]]:
    s = config.infra_settings
    query = urllib.parse.urlencode(
        {"g0.expr": PROMETHEUS_QUERY, "g0.tab": "0", "g0.range_input": "5m"}
    )
    workers = (
        [f"http://127.0.0.1:{config.metrics_port + i}/metrics" for i in range(config.workers)]
        if config.metrics_port
        else []
    )
    return f"{s.prometheus_url}/graph?{query}", workers


# -- the run --------------------------------------------------------------------------


@dataclass
class Result:
    summary: DemoSummary
    files: list[Path]
    economics_note: str


def economics_results(
    config: DemoConfig, network: Path, console: Console
) -> tuple[list[PolicyFigures], str]:
    if not config.economics:
        return [], "economics baselines skipped (--no-economics)"
    try:
        economics = importlib.import_module("router.tools.economics")
    except ImportError:
        return [], "economics baselines not available: router.tools.economics is not installed"
    count = config.economics_count
    console.print(
        f"demo: economics run, {count:,} requests of the same traffic through "
        "each policy (simulated carriers, no brokers)..."
    )
    started = time.monotonic()
    try:
        results = economics.compare(network, count, config.seed, config.rate)
    except Exception as e:  # another team's module: report its failure, keep the live run
        console.print(f"[red]demo: the economics run failed:[/] {e!r}")
        return [], f"economics baselines missing: router.tools.economics.compare failed: {e!r}"
    note = (
        f"economics: router.tools.economics.compare(network, {count:,}, seed={config.seed}, "
        f"rate={config.rate:g}) in {time.monotonic() - started:.0f} s, delivered by ground "
        "truth; live: delivered receipts (lost reports count as not delivered)"
    )
    return cast(list[PolicyFigures], list(results)), note


def run(config: DemoConfig, console: Console) -> Result:
    """The whole demo; everything it started is stopped before it returns or raises."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    s = config.infra_settings
    started: list[str] = []
    children: list[Child] = []
    began = time.monotonic()
    try:
        if config.infra:
            started = brokers_up(s, console)
        network = ensure_network(config, console)
        plan = build_plan(network, config.seed)
        carrier, share = busy_carrier(network, plan, config.seed, config.rate)
        console.print(
            f"demo: busy carrier {carrier} ({100 * share:.1f}% of the load's "
            "traffic by the routing core's choice) goes offline halfway"
        )

        fleet_argv = [
            "fleet",
            "--workers",
            str(config.workers),
            "--bootstrap",
            s.kafka_bootstrap,
            "--mqtt-host",
            s.host,
            "--mqtt-port",
            str(s.mqtt_port),
            "--network",
            str(network),
            "--requests-topic",
            config.requests_topic,
            "--receipts-topic",
            config.receipts_topic,
            "--dead-letter-topic",
            config.dead_letter_topic,
            "--group",
            config.group,
            "--dlr-group",
            config.dlr_group,
            "--metrics-port",
            str(config.metrics_port),
            "--instance",
            f"demo-{os.getpid()}",
            "--log-format",
            "json",
        ]
        targets = Prometheus(s).targets_dir
        if config.metrics_port and targets.is_dir():
            fleet_argv += ["--prometheus-targets", str(targets)]
        console.print(f"demo: supernet fleet --workers {config.workers} (log {logs / 'fleet.log'})")
        uvloop.run(
            kafka.ensure_topics(s.kafka_bootstrap, [kafka.TopicSpec(config.requests_topic, 12)])
        )
        skipped = uvloop.run(skip_backlog(s.kafka_bootstrap, config.requests_topic, config.group))
        if skipped:
            console.print(
                f"demo: skipped {skipped:,} requests an earlier run left in "
                f"{config.requests_topic} (group {config.group})"
            )
        fleet = Child("fleet", fleet_argv, logs / "fleet.log").start()
        children.append(fleet)
        fleet.wait_for('"worker up"', FLEET_START_S, count=config.workers)
        fleet.wait_for('"partitions assigned"', FLEET_START_S, count=config.workers)

        at_s = LEAD_S + config.duration / 2
        scenario = out / "scenario.toml"
        scenario.write_text(scenario_text(carrier, at_s, config.outage_duration_s))
        console.print(
            f"demo: supernet carriers --scenario {scenario} (log {logs / 'carriers.log'})"
        )
        carriers = Child(
            "carriers",
            [
                "carriers",
                "--network",
                str(network),
                "--scenario",
                str(scenario),
                "--mqtt-host",
                s.host,
                "--mqtt-port",
                str(s.mqtt_port),
                "--ledger",
                str(out / "ledger.json"),
                "--host-id",
                f"demo-{os.getpid()}",
                *(
                    [
                        "--metrics-port",
                        str(CARRIERS_METRICS_PORT),
                        "--prometheus-targets",
                        str(targets),
                    ]
                    if config.metrics_port and targets.is_dir()
                    else []
                ),
            ],
            logs / "carriers.log",
        ).start()
        children.append(carriers)
        carriers.wait_for('"carriers ready"', CARRIERS_START_S)
        ready = time.monotonic()

        prom, workers = metrics_urls(config)
        if workers:
            console.print(f"demo: metrics live at {prom}\n      workers: {' '.join(workers)}")
        prefix = config.id_prefix or f"demo{config.seed}-{secrets.token_hex(3)}-"
        start_requests = uvloop.run(end_offsets(s.kafka_bootstrap, config.requests_topic))
        start_receipts = uvloop.run(end_offsets(s.kafka_bootstrap, config.receipts_topic))
        load_config = LoadConfig(
            bootstrap=s.kafka_bootstrap,
            requests_topic=config.requests_topic,
            receipts_topic=config.receipts_topic,
            wait_s=config.wait_s,
            progress=console.is_terminal,
        )
        pacer = Pacer.for_duration(config.rate, config.duration)
        traffic = Traffic(plan, Mix(), config.seed, prefix)
        time.sleep(max(0.0, ready + LEAD_S - time.monotonic()))
        console.print(
            f"demo: load {pacer.total:,} requests at {config.rate:,.0f}/s for "
            f"{config.duration:g} s, ids {prefix}*"
        )
        load: LoadSummary = uvloop.run(run_load(load_config, traffic, pacer, console))
        (out / "load.json").write_text(json.dumps(load.to_dict(), indent=1) + "\n")

        console.print("demo: reading the run's requests and receipts back from Kafka")
        values, end_requests = uvloop.run(
            read_between(s.kafka_bootstrap, config.requests_topic, start_requests)
        )
        created = decode_requests(values, prefix)
        values, end_receipts = uvloop.run(
            read_between(s.kafka_bootstrap, config.receipts_topic, start_receipts)
        )
        receipts = decode_receipts(values)
        del values
        first, last = outage_from_log(carriers.text(), carrier)
        stop_children(children, console)
        outage = Outage(carrier, first, last) if first is not None else None
        policies, note = economics_results(config, network, console)
        summary = summarize(created, receipts, outage, policies)
        files = write_outputs(
            config,
            summary,
            created,
            receipts,
            note,
            {
                "id_prefix": prefix,
                "busy_carrier": carrier,
                "busy_share_predicted": share,
                "network": str(network),
                "scenario": str(scenario),
                "prometheus": prom,
                # what was read: [from, until) per partition (JSON keys are strings)
                "requests_offsets": {
                    p: [start_requests.get(p, 0), end] for p, end in end_requests.items()
                },
                "receipts_offsets": {
                    p: [start_receipts.get(p, 0), end] for p, end in end_receipts.items()
                },
                "worker_metrics": workers,
            },
        )
        console.print(render(summary, note))
        kept = not config.infra or config.keep or not started
        console.print(
            f"metrics: Prometheus {prom}\n"
            f"  (query {PROMETHEUS_QUERY}; Prometheus "
            f"{'is still up' if kept else 'stops with the brokers now: run with --keep to look'})"
        )
        if workers:
            console.print(f"  each worker's /metrics while it ran: {' '.join(workers)}")
        console.print(f"demo: done in {time.monotonic() - began:.0f} s")
        return Result(summary, files, note)
    finally:
        stop_children(children, console)
        if started and not config.keep:
            brokers_down(s, started)
        elif started:
            console.print(f"demo: brokers left running (--keep): {', '.join(started)}")


def stop_children(children: list[Child], console: Console) -> None:
    """Fleet first (it drains and commits), then the carriers; each by its pid."""
    for child in children:
        if child.proc is None or child.proc.poll() is not None:
            continue
        console.print(f"demo: stopping {child.name} (pid {child.proc.pid})")
        timeout = FLEET_STOP_S if child.name == "fleet" else CARRIERS_STOP_S
        child.stop(timeout)


def write_outputs(
    config: DemoConfig,
    summary: DemoSummary,
    created: dict[str, int],
    receipts: list[wire.Receipt],
    note: str,
    run_info: dict[str, Any],
) -> list[Path]:
    out = config.out
    origin = summary.first_created_ms or 0
    collated = collate(created, receipts)
    files = [
        plots.traffic_share(
            share_series(collated, origin),
            summary.outage,
            ((summary.last_created_ms or origin) - origin) / 1000.0 + 1.0,
            out / plots.TRAFFIC_PNG,
        ),
        plots.latency(latency_series(collated, origin), summary.outage, out / plots.LATENCY_PNG),
        plots.cost_by_policy(summary.policies, out / plots.COST_PNG),
    ]
    settings = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in dataclasses.asdict(config).items()
        if k != "infra_settings"
    }
    document = {
        "run": {**run_info, "config": settings, "bootstrap": config.infra_settings.kafka_bootstrap},
        "summary": summary.to_dict(),
        "economics_note": note,
        "plots": [str(f) for f in files],
    }
    path = out / "summary.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    return [*files, path]
