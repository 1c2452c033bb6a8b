"""One chaos scenario, start to end: fresh topics, the carriers (with their journal), a
fleet of workers and the load; the scenario's fault during the load; then settling,
stopping, reading the topics back and the figures. ``run_scenario`` returns what the
JSON keeps of it.

On Kafka (security on) the scenario's topics are created as ``admin`` and granted for the
scenario (revoked after it): the fleet runs as ``fleet``, `supernet load`, the repeats and
the hostile kcat as ``producer`` (the load reads receipts as ``receipts``); the reader of
the topics and the readiness watch are ``admin``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import secrets
import signal
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from benchmarks._chaos_figures import (
    Fault,
    Observed,
    figures,
    ground_truth,
    journal_details,
    repeats_details,
    score_hostile,
    series,
)
from benchmarks._chaos_hostile import Ctx, hostile_records, kcat_produce
from benchmarks._harness import (
    Procs,
    TopicReader,
    carriers_mqtt_args,
    flags_of,
    fleet_mqtt_args,
    fleet_workers,
    grant,
    infra_env,
    infra_up,
    kafka_admin,
    kafka_user,
    observer,
    revoke,
    supernet,
    until_idle,
)
from router.contracts import wire
from router.engine import kafka
from router.support.credentials import KafkaAccess
from router.support.infra_settings import InfraSettings
from router.support.procs import Child
from router.tools.demo.signals import CarrierWatch, fleet_ready
from router.tools.infra.brokers import BROKERS, Kafka
from router.tools.infra.kafka_acls import Pipeline
from router.tools.load.mix import Mix
from router.tools.load.numbers import NumberPlan
from router.tools.load.traffic import Traffic

console = Console(width=None if sys.stdout.isatty() else 220)
SCENARIOS = (
    "worker-kill", "kafka-restart", "mosquitto-restart", "carriers-restart", "hostile", "repeats",
    "kafka-node-kill",
)  # fmt: skip
CLUSTER_ONLY = frozenset({"kafka-node-kill"})  # need --kafka-nodes 3
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s not in CLUSTER_ONLY)
BROKER_OF = {"kafka-restart": "kafka", "mosquitto-restart": "mosquitto"}
RESTARTING = "worker exited; restarting"  # the fleet's line for every restart

# -- producers besides the load ------------------------------------------------------------


def numbers_of(plan: NumberPlan, count: int, seed: int) -> tuple[str, ...]:
    """Routable numbers drawn as the load generator draws them; +447911123456 first."""
    traffic = Traffic(plan, Mix(invalid_share=0.0), seed, "n-")
    out = ["+447911123456"]
    while len(out) < count:
        to, stem = traffic.destination()
        if stem is not None and to not in out:
            out.append(to)
    return tuple(out)


async def produce_repeats(
    access: KafkaAccess, topic: str, plan: NumberPlan, tag: str, ids: int,
    window: tuple[float, float], seed: int,
) -> list[str]:  # fmt: skip
    """``ids`` requests, each produced three times 0.5-5 s apart (the same bytes, as a
    producer retrying), first sends spread over ``window`` (monotonic s); their ids."""
    rnd = random.Random(seed)
    traffic = Traffic(plan, Mix(invalid_share=0.0), seed + 1000, f"{tag}-rep-")
    schedule: list[tuple[float, int]] = []
    for i in range(ids):
        t = rnd.uniform(*window)
        for _ in range(3):
            schedule.append((t, i))
            t += rnd.uniform(0.5, 5.0)
    schedule.sort()
    requests = [traffic.next() for _ in range(ids)]
    encoded: dict[int, bytes] = {}
    partitions = 0
    producer = kafka.producer(access)
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(topic))
        pending = []
        for at, i in schedule:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            r = requests[i]
            if i not in encoded:  # the first send stamps created_at; retries repeat it
                created = time.time_ns() // 1_000_000
                encoded[i] = wire.ENCODER.encode(msgspec.structs.replace(r, created_at=created))
            key = r.to.encode()
            pending.append(await producer.send(topic, encoded[i], key=key,
                                               partition=zlib.crc32(key) % partitions))  # fmt: skip
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [r.id for r in requests]


# -- one scenario ------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    infra: InfraSettings
    network: Path
    plan: NumberPlan
    logs: Path
    numbers: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def worker_options(run: Run) -> list[str]:
    """The worker flags this run sets that the worker has today (noted when missing)."""
    have = flags_of("fleet")
    out: list[str] = []
    for flag, value in (("--hold-limit-s", run.args.hold_limit_s),
                        ("--dedupe-window-s", run.args.dedupe_window_s),
                        ("--submit-timeout-s", run.args.submit_timeout_s)):  # fmt: skip
        if value is None:
            continue
        if flag in have:
            out += [flag, str(value)]
        else:
            run.notes.append(f"`supernet fleet` has no {flag} yet: left out")
    return out


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.time()))


async def _started(obs: Observed, limit_s: float = 60) -> float:
    """Wall clock s when the first request of the load was read back."""
    try:
        async with asyncio.timeout(limit_s):
            await obs.started.wait()
    except TimeoutError:
        raise RuntimeError("no request reached Kafka: see the load's log") from None
    assert obs.first_request is not None
    return obs.first_request


async def run_faults(
    name: str, run: Run, procs: Procs, obs: Observed, faults: list[Fault], topic: str,
    scratch: Path, running: set[asyncio.subprocess.Process], extra: dict[str, Any],
    host_id: str,
) -> None:  # fmt: skip
    a = run.args
    t0 = await _started(obs)
    end = t0 + a.duration
    if name == "worker-kill":
        k = 1
        while t0 + k * a.kill_every < end - 1:
            await _sleep_until(t0 + k * a.kill_every)
            fleet = procs.get("fleet")
            slot = (k - 1) % a.workers
            pid = fleet_workers(fleet.pid).get(slot) if fleet else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                now = time.time()
                faults.append(Fault(name, now, now, f"slot {slot} pid {pid}"))
                console.print(f"  {now - t0:5.1f}s SIGKILL worker slot {slot} (pid {pid})")
            else:
                console.print(f"  {time.time() - t0:5.1f}s worker slot {slot} not running: skipped")
            k += 1
    elif name in BROKER_OF or name in ("carriers-restart", "kafka-node-kill"):
        await _sleep_until(t0 + a.fault_at * a.duration)
        began = time.time()
        if name in BROKER_OF or name == "kafka-node-kill":
            # kafka-node-kill: node 2 of the three (the leader of a third of the partitions)
            broker = (
                Kafka(run.infra, 2)
                if name == "kafka-node-kill"
                else BROKERS[BROKER_OF[name]](run.infra)
            )
            pid = broker.proc.pid()
            if pid is None:
                raise RuntimeError(f"{broker.name} is not running: nothing to kill")
            os.kill(pid, signal.SIGKILL)
            console.print(f"  {began - t0:5.1f}s SIGKILL {broker.name} (pid {pid})")
            await asyncio.sleep(a.down_s)
            # `up --only kafka` starts the nodes that are not running, waits for them all
            await asyncio.to_thread(infra_up, run.infra, [broker.family])
        else:
            pid = procs.kill("carriers")
            console.print(f"  {began - t0:5.1f}s SIGKILL carriers (pid {pid})")
            await asyncio.sleep(a.down_s)
            # Ready when the restarted host publishes its status online (not a log line).
            watcher = observer(run.infra, f"{host_id}-observer")
            async with CarrierWatch(watcher, host_id) as watch:
                procs.start("carriers", procs.argv["carriers"])
                await procs.ready("carriers", watch.host_online.wait())
        ended = time.time()
        faults.append(Fault(name, began, ended, f"pid {pid}"))
        what = broker.name if name == "kafka-node-kill" else name.split("-")[0]
        console.print(f"  {ended - t0:5.1f}s {what} back ({ended - began:.1f}s down)")
    elif name == "hostile":
        ctx = Ctx(f"h{secrets.token_hex(3)}", run.numbers, int(time.time() * 1000))
        records = hostile_records(ctx, a.hostile, a.seed)
        extra["hostile_records"] = records
        chunks = max(1, int((a.duration - 5) / 2))
        for c in range(chunks):
            await _sleep_until(t0 + 2 + c * (a.duration - 5) / chunks)
            await kcat_produce(kafka_user(run.infra, "producer"), topic, records[c::chunks],
                               scratch, running)  # fmt: skip
        console.print(f"  kcat produced {len(records):,} hostile records of "
                      f"{len({h.kind for h in records})} kinds")  # fmt: skip
    elif name == "repeats":
        start = time.monotonic() + max(0.0, t0 - time.time())
        extra["repeat_ids"] = await produce_repeats(
            kafka_user(run.infra, "producer"), topic, run.plan, f"r{secrets.token_hex(3)}",
            a.repeat_ids, (start + 2, start + max(3.0, a.duration - 12)), a.seed,
        )  # fmt: skip
        console.print(f"  produced {a.repeat_ids:,} ids three times each")


async def keep_loading(
    procs: Procs, first: Child, argv: Callable[[int, float], list[str]],
    obs: Observed, duration: float, env: dict[str, str],
) -> list[int]:  # fmt: skip
    """Wait for the load; if it dies (no summary: e.g. its producer gave up during a Kafka
    outage) with more than 2 s of the run left, start another for the rest, as a client
    application would be restarted. The exit codes, one per load process."""
    codes = []
    proc = first
    while True:
        codes.append(await asyncio.wait_for(asyncio.to_thread(proc.wait), duration + 300))
        t0 = obs.first_request or time.time()
        left = t0 + duration - time.time()
        summary = procs.logs / f"load-{len(codes) - 1}.json"
        if await asyncio.to_thread(summary.exists) or left < 2:
            return codes
        console.print(f"  load exited ({codes[-1]}) with {left:.0f} s to go: starting another")
        await asyncio.sleep(2)
        proc = procs.start("load", argv(len(codes), max(1.0, left - 2)), env)


@dataclass
class Scene:
    """One scenario's run: its names and files, its processes, what came back from Kafka
    and what happened meanwhile."""

    name: str
    run: Run
    tag: str
    logs: Path
    procs: Procs
    obs: Observed
    topics: dict[str, str]
    faults: list[Fault] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    running: set[asyncio.subprocess.Process] = field(default_factory=set)  # kcat
    loads: list[int] = field(default_factory=list)  # exit codes of the load processes

    @classmethod
    def new(cls, name: str, run: Run) -> Scene:
        tag = f"{name}-{secrets.token_hex(3)}"
        topics = {
            t: f"chaos.{tag}.{t}" for t in ("requests", "receipts", "dead-letter", "attempts")
        }
        logs = run.logs / name
        obs = Observed(topics["requests"], topics["receipts"], topics["dead-letter"])
        return cls(name, run, tag, logs, Procs(logs), obs, topics)

    @property
    def pipeline(self) -> Pipeline:
        """The scenario's topics and the fleet's group, as granted."""
        t = self.topics
        return Pipeline(t["requests"], t["receipts"], t["dead-letter"], t["attempts"],
                        f"chaos-{self.tag}")  # fmt: skip

    @property
    def host_id(self) -> str:
        """The carriers process's host id and MQTT identity (its status topic says when
        it is up); the fleet's slot i is the identity ``c<tag>-w<i>``, and the watch on
        the host's status ``<host id>-observer``."""
        return f"chaos-{self.tag}"

    @property
    def journal(self) -> Path:
        return self.logs / "journal.jsonl"

    def carriers_argv(self) -> list[str]:
        run, s = self.run, self.run.infra
        carriers = ["carriers", "--network", str(run.network),
                    *carriers_mqtt_args(s, self.host_id),
                    "--ledger", str(self.logs / "ledger.json")]  # fmt: skip
        if "--journal" in flags_of("carriers"):
            carriers += ["--journal", str(self.journal)]
        elif "`supernet carriers` has no --journal yet" not in run.notes:
            run.notes.append("`supernet carriers` has no --journal yet: no ground truth")
        return supernet(*carriers)

    def fleet_argv(self) -> list[str]:
        run, a, s, topics, tag = self.run, self.run.args, self.run.infra, self.topics, self.tag
        fleet = ["fleet", "--workers", str(a.workers), "--bootstrap", s.kafka_bootstrap,
                 *fleet_mqtt_args(s, f"c{tag}", a.workers), "--network", str(run.network),
                 "--requests-topic", topics["requests"], "--receipts-topic", topics["receipts"],
                 "--dead-letter-topic", topics["dead-letter"], "--group", f"chaos-{tag}",
                 "--dlr-group", f"chaos-{tag}", "--partitions", str(a.partitions),
                 "--metrics-port", str(a.metrics_port), "--instance", f"c{tag}",
                 "--log-format", "json", *worker_options(run)]  # fmt: skip
        if "--attempts-topic" in flags_of("fleet"):
            fleet += ["--attempts-topic", topics["attempts"]]
        return supernet(*fleet)

    def load_argv(self, n: int, seconds: float) -> list[str]:
        """The ``n``-th load process's command, for ``seconds`` of load: as the users
        ``producer`` and ``receipts`` (the store of ``load_env``), on the topics made here."""
        a, s, topics, tag = self.run.args, self.run.infra, self.topics, self.tag
        return supernet(
            "load", "--rate", str(a.rate), "--duration", f"{seconds:.1f}", "--network",
            str(self.run.network), "--bootstrap", s.kafka_bootstrap, "--producer-user",
            "producer", "--receipts-user", "receipts", "--no-create-topics", "--requests-topic",
            topics["requests"], "--receipts-topic", topics["receipts"], "--wait-s", "1",
            "--no-progress", "--id-prefix", f"{tag}-{n}-", "--seed", str(a.seed + n),
            "--json", str(self.logs / f"load-{n}.json"),
        )  # fmt: skip


async def run_scenario(name: str, run: Run) -> dict[str, Any]:
    a, s = run.args, run.infra
    scene = Scene.new(name, run)
    procs = scene.procs
    began = time.monotonic()
    await asyncio.to_thread(infra_up, s, ["kafka", "mosquitto"])  # back if a fault left it down
    await kafka.ensure_topics(
        kafka_admin(s),
        [kafka.TopicSpec(scene.topics[t], a.partitions)
         for t in ("requests", "receipts", "dead-letter")],
    )  # fmt: skip
    await grant(s, scene.pipeline)
    carriers, fleet = scene.carriers_argv(), scene.fleet_argv()
    console.print(f"[bold]{name}[/]: {a.duration:g} s at {a.rate:g}/s, topics chaos.{scene.tag}.*")
    try:
        watcher = observer(s, f"{scene.host_id}-observer")
        async with CarrierWatch(watcher, scene.host_id) as watch:
            procs.start("carriers", carriers)
            procs.start("fleet", fleet)
            await procs.ready("carriers", watch.host_online.wait())
        # Ready when the fleet's consumer group is stable with every worker in it.
        group_ready = fleet_ready(kafka_admin(s), f"chaos-{scene.tag}", f"c{scene.tag}", a.workers)
        await procs.ready("fleet", group_ready, limit_s=120)
        await _load_and_settle(scene)
    finally:
        for proc in list(scene.running):
            if proc.returncode is None:
                proc.kill()
        await asyncio.to_thread(procs.stop)
        try:
            await revoke(s, scene.pipeline)
        except Exception as e:  # e.g. Kafka left down by a fault: the run's figures stand
            run.notes.append(f"{name}: its Kafka grants were not revoked: {e!r}"[:300])
    return _result(scene, began)


async def _load_and_settle(scene: Scene) -> None:
    """Follow the topics while the load runs with the fault; wait for the outcomes and
    reports to settle; stop the carriers and then the fleet; read the topics to the end."""
    name, run, procs, obs, topics = scene.name, scene.run, scene.procs, scene.obs, scene.topics
    a, s = run.args, run.infra
    stop = asyncio.Event()
    read = {topics[t]: a.partitions for t in ("requests", "receipts", "dead-letter")}
    async with TopicReader(kafka_admin(s), read, obs.on_record) as reader:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(reader.follow(stop))
            try:
                # `supernet load` finds its users' passwords in the store of these brokers
                env = infra_env(s)
                load_proc = procs.start("load", scene.load_argv(0, a.duration), env)
                fault = tg.create_task(
                    run_faults(name, run, procs, obs, scene.faults, topics["requests"],
                               scene.logs, scene.running, scene.extra, scene.host_id)
                )  # fmt: skip
                scene.loads = await keep_loading(procs, load_proc, scene.load_argv, obs,
                                                 a.duration, env)  # fmt: skip
                await fault
                await _settle(scene)
                await reader.quiet(4, a.settle_s)
                await asyncio.to_thread(procs.stop, {"carriers"})  # the journal is complete
                await reader.quiet(3, 15)  # the last reports become receipts
                await asyncio.to_thread(procs.stop, {"fleet"}, 60)
            finally:
                stop.set()
        if not await reader.catch_up():
            run.notes.append(f"{name}: could not read the topics to their end")


async def _settle(scene: Scene) -> None:
    """Until every request has an outcome or none came for a while (noted if --settle-s
    ran out first)."""
    a, obs = scene.run.args, scene.obs
    idle = (a.submit_timeout_s or 10.0) + 5
    settled = await until_idle(obs.progress, lambda: not obs.open, idle, a.settle_s)
    if not settled:
        scene.extra["open_at_bound"] = len(obs.open)
        scene.run.notes.append(
            f"{scene.name}: outcomes were still arriving when --settle-s "
            f"{a.settle_s:g} ran out ({len(obs.open):,} open): its lost "
            "count includes requests that were late, not only lost"
        )


def _result(scene: Scene, began: float) -> dict[str, Any]:
    """What the JSON keeps of one scenario (``began``: its start, monotonic s): its figures
    and the details behind them."""
    obs, faults, extra, loads = scene.obs, scene.faults, scene.extra, scene.loads
    fleet_log = scene.procs.log("fleet")
    restarts = fleet_log.count(RESTARTING)
    kills = sum(1 for f in faults if f.kind == "worker-kill")
    gt = ground_truth([scene.journal])
    fig = figures(obs, gt, faults, restarts, kills)
    details: dict[str, Any] = {}
    if "hostile_records" in extra:
        scores = score_hostile(obs, extra["hostile_records"])
        fig.hostile_wrong = sum(x.wrong for x in scores.values())
        details["hostile"] = {k: dataclasses.asdict(v) | {"wrong": v.wrong}
                              for k, v in sorted(scores.items())}  # fmt: skip
    if "repeat_ids" in extra:
        details["repeats"] = repeats_details(obs, gt, extra["repeat_ids"])
        fig.repeats_twice = details["repeats"]["accepted_by_two_or_more"]
    summaries = [scene.logs / f"load-{n}.json" for n in range(len(loads))]
    return {
        "scenario": scene.name,
        "seconds": round(time.monotonic() - began, 1),
        "figures": dataclasses.asdict(fig),
        "faults": [dataclasses.asdict(f) for f in faults],
        "worker_kills": kills,
        "load_exit_codes": loads,
        "open_at_settle_bound": extra.get("open_at_bound"),
        "outcomes_per_s": series(obs),
        "load": [json.loads(p.read_text()) if p.exists() else None for p in summaries],
        "ground_truth": gt is not None,
        "journal": journal_details(gt),
        "logs": str(scene.logs),
        **details,
    }
