"""The demo's shell: brokers, network, carriers with an outage, a fleet, load, receipts.

Steps (each one prints what it does):

1. Brokers: ``supernet infra up`` for those not running (remembered, so that only those
   are stopped at the end); skipped with ``infra=False`` (the tests' shared brokers).
2. Network: ``supernet network generate --seed S`` into ``OUT/network`` unless a network
   of the same seed is there already (or one is given).
3. The busy carrier: the routing core (``Router.decide``, advertised health) over a
   sample of the load generator's own traffic; the carrier it picks most goes offline.
4. ``supernet fleet --workers N`` (metrics on ``--metrics-port`` + i, registered with
   Prometheus through its file-discovery directory), ready once the Kafka consumer group
   is stable with all its workers; then ``supernet carriers`` with a generated scenario
   (the busy carrier offline from half the load for a quarter of it), ready once its host
   status goes ``online`` over MQTT (``signals``).
5. The load (``router.tools.load``'s producer, in this process, with its progress bar), at
   ``rate`` for ``duration`` seconds, ids ``<prefix>*``; it waits for outcomes and
   delivery reports like ``supernet load`` does.
6. Every request and receipt of the run, read back from Kafka between the offsets noted
   before and after (``kafka.read_between``); the outage's real start and end as the busy
   carrier's status went ``offline`` and ``online`` again over MQTT.
7. Fleet and carriers stopped (SIGTERM, then wait); the economics baselines
   (``router.tools.economics``); the summary (``summary.summarize``) printed and written as
   JSON, and the plots.

Whatever happens (an error, Ctrl-C), the processes it started are stopped by pid, and the
brokers it started are stopped unless ``keep``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import uvloop
from rich.console import Console

from router.contracts import wire
from router.engine import kafka
from router.support.procs import Child, ChildExited, ready_or_exited
from router.tools.demo.config import (
    CARRIERS_START_S,
    CARRIERS_STOP_S,
    FLEET_START_S,
    FLEET_STOP_S,
    LEAD_S,
    DemoConfig,
    DemoError,
)
from router.tools.demo.outputs import write_outputs
from router.tools.demo.render import render
from router.tools.demo.signals import CarrierWatch, fleet_ready
from router.tools.demo.steps import (
    CARRIERS_IDENTITY,
    OBSERVER_IDENTITY,
    PROMETHEUS_QUERY,
    brokers_down,
    brokers_up,
    busy_carrier,
    carriers_command,
    decode_receipts,
    decode_requests,
    economics_results,
    ensure_network,
    fleet_command,
    identities,
    instance,
    metrics_urls,
    scenario_text,
    skip_backlog,
)
from router.tools.demo.summary import DemoSummary, Outage, summarize
from router.tools.infra.brokers import Prometheus
from router.tools.load.mix import Mix
from router.tools.load.numbers import NumberPlan, build_plan
from router.tools.load.pace import Pacer
from router.tools.load.run import LoadConfig, run_load
from router.tools.load.traffic import Traffic

__all__ = ["DemoConfig", "DemoError", "Result", "run"]


@dataclass
class Result:
    summary: DemoSummary
    files: list[Path]
    economics_note: str


@dataclass
class Live:
    """What the live part of the run (fleet, carriers, load) produced."""

    prefix: str
    scenario: Path
    created: dict[str, int]  # id -> created_at of this run's requests
    receipts: list[wire.Receipt]
    outage: Outage | None
    read: dict[str, dict[int, list[int]]]  # topic role -> partition -> [from, until)


def supernet(*args: str) -> list[str]:
    """The argv of a `supernet` command, run by this interpreter."""
    return [sys.executable, "-m", "router", *args]


def run(config: DemoConfig, console: Console) -> Result:
    """The whole demo; everything it started is stopped before it returns or raises."""
    config.out.mkdir(parents=True, exist_ok=True)
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
        live = uvloop.run(live_run(config, network, plan, carrier, children, console))
        stop_children(children, console)
        result = finish(config, console, network, (carrier, share), live)
        kept = not config.infra or config.keep or not started
        prom, workers = metrics_urls(config)
        console.print(
            f"metrics: Prometheus {prom}\n"
            f"  (query {PROMETHEUS_QUERY}; Prometheus "
            f"{'is still up' if kept else 'stops with the brokers now: run with --keep to look'})"
        )
        if workers:
            console.print(f"  each worker's /metrics while it ran: {' '.join(workers)}")
        console.print(f"demo: done in {time.monotonic() - began:.0f} s")
        return result
    finally:
        stop_children(children, console)
        if started and not config.keep:
            brokers_down(s, started)
        elif started:
            console.print(f"demo: brokers left running (--keep): {', '.join(started)}")


async def live_run(
    config: DemoConfig,
    network: Path,
    plan: NumberPlan,
    carrier: str,
    children: list[Child],
    console: Console,
) -> Live:
    """Fleet, then carriers, then the load; the run's requests and receipts read back."""
    s = config.infra_settings
    logs = config.out / "logs"
    targets = Prometheus(s).targets_dir
    has_targets = targets if targets.is_dir() else None
    await identities(config)
    await start_fleet(config, network, has_targets, children, console)
    scenario = config.out / "scenario.toml"
    scenario.write_text(scenario_text(carrier, LEAD_S + config.duration / 2,
                                      config.outage_duration_s))  # fmt: skip
    console.print(f"demo: supernet carriers --scenario {scenario} (log {logs / 'carriers.log'})")
    observer = s.secrets().mqtt(s.host, s.mqtt_port, OBSERVER_IDENTITY)
    async with CarrierWatch(observer, CARRIERS_IDENTITY, carrier) as watch:
        argv = supernet(*carriers_command(config, network, scenario, has_targets))
        carriers = Child("carriers", argv, logs / "carriers.log", fresh_log=True)
        children.append(carriers)
        await _ready(carriers, watch.host_online.wait(), CARRIERS_START_S, "ready")
        ready = time.monotonic()
        prom, workers = metrics_urls(config)
        if workers:
            # soft_wrap: a URL broken over two lines can be neither clicked nor copied
            console.print(f"demo: metrics live at {prom}\n      workers: {' '.join(workers)}",
                          soft_wrap=True)  # fmt: skip
        prefix = config.id_prefix or f"demo{config.seed}-{secrets.token_hex(3)}-"
        admin = s.kafka("admin")
        start_requests = await kafka.end_offsets(admin, config.requests_topic)
        start_receipts = await kafka.end_offsets(admin, config.receipts_topic)
        await asyncio.sleep(max(0.0, ready + LEAD_S - time.monotonic()))
        await load(config, plan, prefix, console)
        console.print("demo: reading the run's requests and receipts back from Kafka")
        requests = await kafka.read_between(admin, config.requests_topic, start_requests)
        receipts = await kafka.read_between(admin, config.receipts_topic, start_receipts)
        outage = (
            Outage(carrier, watch.offline_ms, watch.online_again_ms)
            if watch.offline_ms is not None
            else None
        )
    return Live(
        prefix,
        scenario,
        decode_requests(requests.values, prefix),
        decode_receipts(receipts.values),
        outage,
        {
            "requests": {p: [start_requests.get(p, 0), e] for p, e in requests.ends.items()},
            "receipts": {p: [start_receipts.get(p, 0), e] for p, e in receipts.ends.items()},
        },
    )


async def start_fleet(
    config: DemoConfig,
    network: Path,
    targets: Path | None,
    children: list[Child],
    console: Console,
) -> None:
    """The fleet on a fresh backlog, once its consumer group holds all its workers."""
    s = config.infra_settings
    log = config.out / "logs" / "fleet.log"
    console.print(f"demo: supernet fleet --workers {config.workers} (log {log})")
    admin = s.kafka("admin")
    await kafka.ensure_topics(admin, [kafka.TopicSpec(config.requests_topic, 12)])
    skipped = await skip_backlog(admin, config.requests_topic, config.group)
    if skipped:
        console.print(
            f"demo: skipped {skipped:,} requests an earlier run left in "
            f"{config.requests_topic} (group {config.group})"
        )
    fleet = Child("fleet", supernet(*fleet_command(config, network, targets)), log,
                  fresh_log=True)  # fmt: skip
    children.append(fleet)
    ready = fleet_ready(admin, config.group, instance(), config.workers)
    await _ready(fleet, ready, FLEET_START_S, f"ready with {config.workers} workers in its group")


async def _ready(child: Child, signal: Awaitable[object], timeout_s: float, what: str) -> None:
    """Wait for ``signal`` from ``child``; DemoError if it exits first or takes too long."""
    try:
        await ready_or_exited(child, signal, timeout_s, what)
    except (ChildExited, TimeoutError) as e:
        raise DemoError(str(e)) from None


async def load(config: DemoConfig, plan: NumberPlan, prefix: str, console: Console) -> None:
    """The load generator at the configured rate; its report goes to OUT/load.json."""
    s = config.infra_settings
    load_config = LoadConfig(
        producer=s.kafka("producer"),
        receipts=s.kafka("receipts"),
        admin=s.kafka("admin"),
        requests_topic=config.requests_topic,
        receipts_topic=config.receipts_topic,
        wait_s=config.wait_s,
        progress=console.is_terminal,
    )
    pacer = Pacer.for_duration(config.rate, config.duration)
    traffic = Traffic(plan, Mix(), config.seed, prefix)
    console.print(
        f"demo: load {pacer.total:,} requests at {config.rate:,.0f}/s for "
        f"{config.duration:g} s, ids {prefix}*"
    )
    report = await run_load(load_config, traffic, pacer, console)
    (config.out / "load.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")


def finish(
    config: DemoConfig, console: Console, network: Path, busy: tuple[str, float], live: Live
) -> Result:
    """The economics baselines, the summary, the plots and summary.json."""
    policies, note = economics_results(config, network, console)
    summary = summarize(live.created, live.receipts, live.outage, policies)
    prom, workers = metrics_urls(config)
    files = write_outputs(
        config,
        summary,
        live.created,
        live.receipts,
        note,
        {
            "id_prefix": live.prefix,
            "busy_carrier": busy[0],
            "busy_share_predicted": busy[1],
            "network": str(network),
            "scenario": str(live.scenario),
            "prometheus": prom,
            # what was read: [from, until) per partition (JSON keys are strings)
            "requests_offsets": live.read["requests"],
            "receipts_offsets": live.read["receipts"],
            "worker_metrics": workers,
        },
    )
    console.print(render(summary, note))
    return Result(summary, files, note)


def stop_children(children: list[Child], console: Console) -> None:
    """Fleet first (it drains and commits), then the carriers; each by its pid."""
    for child in children:
        if not child.alive():
            continue
        console.print(f"demo: stopping {child.name} (pid {child.pid})")
        child.stop(FLEET_STOP_S if child.name == "fleet" else CARRIERS_STOP_S)
