"""The demo's steps before and after the live run: brokers, network, the busy carrier,
the command lines of the fleet and the carriers, the backlog, decoding what was read
back, and the economics baselines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgspec
from rich.console import Console

from router.contracts import network_file, wire
from router.core.decision import Router
from router.core.network import load_network
from router.core.policy import CLASS_INDEX
from router.engine import kafka
from router.engine.settings import WorkerSettings
from router.support.credentials import KafkaAccess
from router.support.infra_settings import InfraSettings
from router.tools import economics
from router.tools.demo.config import BUSY_SAMPLE, CARRIERS_METRICS_PORT, DemoConfig, DemoError
from router.tools.demo.summary import PolicyFigures
from router.tools.infra.brokers import BROKERS
from router.tools.infra.lifecycle import down, up
from router.tools.load.mix import Mix
from router.tools.load.numbers import NumberPlan
from router.tools.load.traffic import Traffic

PROMETHEUS_QUERY = "sum by (status) (rate(supernet_receipts_total[15s]))"


def brokers_up(settings: InfraSettings, console: Console) -> list[str]:
    """Start the brokers that are not running; returns the names of those started."""
    started = [name for name, cls in BROKERS.items() if cls(settings).proc.pid() is None]
    up(settings, list(BROKERS))
    if not started:
        console.print("demo: brokers already running; they stay up at the end")
    return started


def brokers_down(settings: InfraSettings, names: Sequence[str]) -> None:
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
    argv = [sys.executable, "-m", "router", "network", "generate",
            "--seed", str(config.seed), "--out", str(directory)]  # fmt: skip
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


def instance() -> str:
    """The name of this run's fleet (its workers: ``<this>-w<i>``)."""
    return f"demo-{os.getpid()}"


# The demo's MQTT identities (provisioned by ``identities``): each connection is one.
CARRIERS_IDENTITY = "demo-carriers"
ROUTER_IDENTITY = "demo-router"  # the fleet's slot i: demo-router-w<i>
OBSERVER_IDENTITY = "demo-observer"


async def identities(config: DemoConfig) -> None:
    """Provision the run's MQTT identities (once; a running Mosquitto reloads them) and
    grant its Kafka topics to the fleet, the producer and receipt readers."""
    s = config.infra_settings
    if not s.security:
        return
    from router.tools.infra import credentials, kafka_acls

    credentials.provision(s, "carriers", [CARRIERS_IDENTITY])
    credentials.provision(s, "router", [f"{ROUTER_IDENTITY}-w{i}" for i in range(config.workers)])
    credentials.provision(s, "observer", [OBSERVER_IDENTITY])
    pipeline = kafka_acls.Pipeline(
        requests=config.requests_topic,
        receipts=config.receipts_topic,
        dead_letter=config.dead_letter_topic,
        group=config.group,
    )
    await kafka_acls.grant(s.kafka("admin"), pipeline)


def fleet_command(config: DemoConfig, network: Path, targets: Path | None) -> list[str]:
    """`supernet fleet` for the run: every setting the demo chooses is written as a flag
    (``WorkerSettings.to_argv``), the rest come from the environment or the defaults."""
    s = config.infra_settings
    chosen = {
        "bootstrap": s.kafka_bootstrap,
        "mqtt_host": s.host,
        "mqtt_port": s.mqtt_port,
        "security": "on" if s.security else "off",
        "secrets_dir": str(s.secrets_dir),
        "mqtt_user": ROUTER_IDENTITY,
        "network": str(network),
        "requests_topic": config.requests_topic,
        "receipts_topic": config.receipts_topic,
        "dead_letter_topic": config.dead_letter_topic,
        "group": config.group,
        "dlr_group": config.dlr_group,
        "metrics_port": config.metrics_port,
        "instance": instance(),
        "log_format": "json",
    }
    if config.metrics_port and targets is not None:
        chosen["prometheus_targets"] = str(targets)
    worker = msgspec.convert(chosen, WorkerSettings)
    return ["fleet", "--workers", str(config.workers), *worker.to_argv(chosen)]


def carriers_command(
    config: DemoConfig, network: Path, scenario: Path, targets: Path | None
) -> list[str]:
    s = config.infra_settings
    argv = ["carriers", "--network", str(network), "--scenario", str(scenario),
            "--mqtt-host", s.host, "--mqtt-port", str(s.mqtt_port),
            "--security", "on" if s.security else "off", "--secrets-dir", str(s.secrets_dir),
            "--ledger", str(config.out / "ledger.json"),
            "--host-id", CARRIERS_IDENTITY]  # fmt: skip
    if config.metrics_port and targets is not None:
        argv += ["--metrics-port", str(CARRIERS_METRICS_PORT), "--prometheus-targets", str(targets)]
    return argv


async def skip_backlog(admin: KafkaAccess, topic: str, group: str) -> int:
    """Commit ``group``'s offsets at the end of ``topic``: requests an earlier, interrupted
    run left unanswered are skipped, so this run measures only its own traffic. Returns
    how many were skipped."""
    counts = await kafka.partition_counts(admin, [topic])
    tps = [kafka.TopicPartition(topic, p) for p in range(counts.get(topic, 0))]
    consumer = kafka.consumer(admin, group)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps) if tps else {}
        committed = {tp: await consumer.committed(tp) for tp in tps}
        skipped: int = sum(end - (committed[tp] or 0) for tp, end in ends.items())
        if ends:
            await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()
    return skipped


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


def economics_results(
    config: DemoConfig, network: Path, console: Console
) -> tuple[list[PolicyFigures], str]:
    """The economics run's policies over the same traffic (``router.tools.economics``)."""
    if not config.economics:
        return [], "economics baselines skipped (--no-economics)"
    count = config.economics_count
    console.print(
        f"demo: economics run, {count:,} requests of the same traffic through "
        "each policy (simulated carriers, no brokers)..."
    )
    started = time.monotonic()
    results = economics.compare(network, count, config.seed, config.rate)
    note = (
        f"economics: router.tools.economics.compare(network, {count:,}, seed={config.seed}, "
        f"rate={config.rate:g}) in {time.monotonic() - started:.0f} s, delivered by ground "
        "truth; live: delivered receipts (lost reports count as not delivered)"
    )
    return list(results), note
