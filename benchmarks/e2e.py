"""End-to-end benchmark: offered load stepped up until saturation through the whole path
(Kafka in, route, MQTT carrier submit, delivery report, Kafka receipts), with 1 and 2
workers, against a same-run ceiling: an aiokafka passthrough (benchmarks/passthrough.py)
that consumes the same requests and produces a receipt-sized record per message, with no
routing and no carriers, on the same brokers.

For each system the offered rate starts at --start-rate and grows by --factor each step
(--step-s seconds of `supernet load` traffic, seeded, realistic mix) until the achieved
outcome rate falls below 90% of the offered rate in two steps in a row, or outcomes go
missing. Saturation is the highest achieved rate. Then one more step at half of
saturation gives the latency figures: request -> `sent` (p50/p99), and apart from it the
engine's own: request -> submitted to the carrier (the receipt's `submitted_ts`) and
carrier accept -> `sent` receipt durable (the broker's append time of the receipt record:
the benchmark's receipts topics stamp LogAppendTime), so what is the simulated carrier's
is apart from what is the engine's.

A step that breaks (the load generator's produce refused, say a metadata error, or
requests left without an outcome) is run once more; if it breaks again, the sweep stops
and its result is marked broken with the reason: the table prints no ratio for it.

The brokers are the project's own (`supernet infra`), on their own ports and state
directory (.supernet/bench) so that a demo or the tests are never touched; they are
started if needed and stopped at the end if this run started them. They run secured
(TLS, authentication, ACLs): the carriers connect as the MQTT identity `bench`, fleet
slot i as `b<tag>-w<i>`, the readiness watch as `bench-observer` (provisioned here); on
Kafka the workers and the passthrough are the user `fleet`, the load generator
`producer` and `receipts`, on topics granted for the run (and revoked after it), and the
benchmark's own clients `admin`.

--compare-security measures what security costs, in the same run: the 1-worker ceiling
and routed sweeps on the secured brokers, then again on a second set that runs with
security off (SUPERNET_SECURITY=off: plain text, no authentication, no ACLs; state in
.supernet/bench/infra-open, other ports), and the ratio of saturations, on / off;
--rounds N repeats the 1-worker sweeps in ABBA order (on, off, off, on, ...) and takes the
ratio of the means. Every step prints the CPU per message of each process (from /proc:
workers, carriers, kafka, mosquitto, and load, this process, which runs the load
generator), over the step's whole window; the JSON has them.

    .venv/bin/python benchmarks/e2e.py                 # about 5 to 8 minutes
    .venv/bin/python benchmarks/e2e.py --quick         # fewer, shorter steps
    .venv/bin/python benchmarks/e2e.py --json out/e2e.json --profile out/e2e-profile
    .venv/bin/python benchmarks/e2e.py --workers 1 --compare-security --rounds 2 --routed-only
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make `benchmarks._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from benchmarks._e2e_table import (
    Result,
    Step,
    broken,
    broken_lines,
    compare_security,
    cpu_text,
    latency_text,
    render,
)
from benchmarks._harness import (
    BENCH_DIR,
    BENCH_INFRA,
    ROOT,
    CpuMeter,
    Procs,
    carriers_mqtt_args,
    children,
    console,
    fleet_mqtt_args,
    grant,
    kafka_admin,
    kafka_user,
    network_dir,
    observer,
    revoke,
    security_args,
    supernet,
)
from router.engine import kafka
from router.support.infra_settings import InfraSettings
from router.tools.demo.signals import CarrierWatch, fleet_ready
from router.tools.infra import lifecycle as infra
from router.tools.infra.kafka_acls import Pipeline
from router.tools.load.mix import Mix
from router.tools.load.numbers import NumberPlan, build_plan
from router.tools.load.pace import Pacer
from router.tools.load.report import Summary
from router.tools.load.run import LoadConfig, run_load
from router.tools.load.traffic import Traffic

# The same-run baseline of --compare-security: brokers without TLS, authentication or ACLs.
OPEN_INFRA = dataclasses.replace(
    BENCH_INFRA,
    kafka_port=39192,
    kafka_controller_port=39193,
    mqtt_port=31884,
    prometheus_port=39190,
    state_dir=BENCH_DIR / "infra-open",
    security=False,
)
SATURATED = 0.9  # achieved below this share of offered: the system is saturated
RECEIPT_PARTITIONS = 12  # as a worker or the load generator would create the topic
# The load generator's batches: 20 ms of traffic, not supernet load's 5 ms. Fewer, larger
# Kafka requests cost it less CPU (a request costs about the same to write whatever its
# size); latency is measured from each slice's own send time, so it is not inflated.
LOAD_SLICE_S = 0.02


async def step(
    infra_s: InfraSettings, topics: tuple[str, str], plan: NumberPlan, rate: float, seconds: float,
    seed: int, meter: CpuMeter,
) -> Step:  # fmt: skip
    traffic = Traffic(plan, Mix(), seed, f"b{secrets.token_hex(3)}-")
    config = LoadConfig(
        producer=kafka_user(infra_s, "producer"),
        receipts=kafka_user(infra_s, "receipts"),
        admin=kafka_admin(infra_s),  # creates the topics a passthrough did not
        requests_topic=topics[0],
        receipts_topic=topics[1],
        # Outcomes may come long after the last request at 2.5x the saturation (the
        # second saturated step): missing ones after this are a broken step, not a slow one.
        wait_s=max(10.0, 3 * seconds),
        # The step's window takes in most of its delivery reports too (a median 1.5 s
        # after the submit; a few are lost on purpose, so it never waits for all): then
        # CPU per message counts a message's report, and the next step does not start
        # with this one's reports still arriving (that made CPU per message at half of
        # saturation look twice what it is at saturation).
        delivery_wait_s=4.0,
    )
    before = meter.read()

    def ready() -> None:  # the records are built: the meter starts with the first send
        before.update(meter.read())

    try:
        s: Summary = await run_load(
            config, traffic, Pacer.for_duration(rate, seconds, LOAD_SLICE_S), on_ready=ready
        )
    except kafka.KafkaError as e:  # a refused produce (NotLeaderForPartition, say)
        return Step(rate, 0.0, 0, 0, None, None, 0, broken=f"produce: {type(e).__name__}: {e}")
    cpu = CpuMeter.per_message(before, meter.read(), s.produced)
    missing = s.without_outcome
    return Step(
        offered=rate,
        achieved=s.outcomes_per_second or 0.0,
        produced=s.produced,
        missing=missing,
        p50_ms=s.latency_sent.p50_ms,
        p99_ms=s.latency_sent.p99_ms,
        failed=s.by_status.get("failed", 0),
        submitted_p50_ms=s.latency_submitted.p50_ms,
        submitted_p99_ms=s.latency_submitted.p99_ms,
        durable_p50_ms=s.latency_durable.p50_ms,
        durable_p99_ms=s.latency_durable.p99_ms,
        cpu_us=cpu,
        broken=f"{missing:,} of {s.produced:,} requests without an outcome" if missing else None,
    )


async def stamped_receipts(infra_s: InfraSettings, topic: str) -> None:
    """The receipts topic, created before its writers start, with the broker's append time
    as each record's timestamp: carrier accept -> durable is then measurable per receipt."""
    await kafka.ensure_topics(
        kafka_admin(infra_s),
        [kafka.TopicSpec(topic, RECEIPT_PARTITIONS,
                         configs=(("message.timestamp.type", "LogAppendTime"),))],
    )  # fmt: skip


async def sweep(
    label: str, infra_s: InfraSettings, topics: tuple[str, str], plan: NumberPlan,
    args: argparse.Namespace, meter: CpuMeter,
) -> tuple[list[Step], float, Step | None]:  # fmt: skip
    steps: list[Step] = []
    rate, over = args.start_rate, 0

    async def measured(rate: float, seed: int) -> Step:
        """One step; a broken one once more, after a pause to let the system settle."""
        s = await step(infra_s, topics, plan, rate, args.step_s, seed, meter)
        if s.broken:
            console.print(f"  [yellow]{label}: step at {rate:,.0f}/s broke ({s.broken}): "
                          "once more[/]")  # fmt: skip
            steps.append(s)
            await asyncio.sleep(5)
            s = await step(infra_s, topics, plan, rate, args.step_s, seed + 1000, meter)
        steps.append(s)
        return s

    for i in range(args.max_steps):
        s = await measured(rate, args.seed + i)
        console.print(
            f"  {label}: offered {s.offered:>8,.0f}/s  achieved {s.achieved:>8,.0f}/s  "
            + latency_text(s)
            + f"  missing {s.missing}"
            + cpu_text(s.cpu_us)
        )
        if s.broken:
            break
        over = over + 1 if s.achieved < SATURATED * s.offered else 0
        # Two saturated steps in a row: a step just past the knee (89% of its offered
        # rate, say) is not yet the most the system carries; the next, higher one shows it.
        if over >= 2 or rate >= args.max_rate:
            break
        rate = min(args.max_rate, rate * args.factor)
    saturation = max((s.achieved for s in steps if not s.broken), default=0.0)
    if steps[-1].broken:
        console.print(f"  [red]{label}: broke twice at {rate:,.0f}/s: {steps[-1].broken}[/]")
        return steps, saturation, None
    await asyncio.sleep(2)  # let a saturated system drain before the latency step
    half = await measured(saturation / 2, args.seed + 100)
    console.print(
        f"  {label}: at half of saturation ({half.offered:,.0f}/s): "
        + latency_text(half)
        + cpu_text(half.cpu_us)
    )
    return steps, saturation, half


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        console.print("[yellow]py-spy not installed: no profile[/]")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    # --gil: only samples holding the GIL, i.e. running Python. Without it py-spy samples
    # wall time, and on two cores shared by six busy processes a worker descheduled in a
    # syscall counts there: a TLS write measured at 1 ms of CPU per MB showed as 8% of a
    # worker that writes a few MB/s.
    return subprocess.Popen(
        [spy, "record", "--gil", "-p", str(pid), "-d", str(int(seconds)), "-f", "raw",
         "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def consuming(procs: Procs, name: str, workers: int, limit_s: float = 90) -> None:
    """Until the fleet ``name`` logged "partitions assigned" for each of its ``workers``
    (noted, not fatal, if ``limit_s`` passes)."""
    began = time.monotonic()
    while procs.log(name).count('"event": "partitions assigned"') < workers:
        if time.monotonic() - began > limit_s:
            console.print(f"[yellow]{name}: not every worker has its partitions yet[/]")
            return
        await asyncio.sleep(0.2)
    waited = time.monotonic() - began
    if waited > 2:
        console.print(f"[yellow]{name}: its workers took {waited:.0f} s more to take their "
                      "partitions (restoring their attempts logs)[/]")  # fmt: skip


def broker_pids(infra_s: InfraSettings) -> dict[str, int]:
    """The pids of the running Kafka and Mosquitto of ``infra_s``."""
    found = {b.name: b.proc.pid() for b in infra.brokers(infra_s, ["kafka", "mosquitto"])}
    return {name: pid for name, pid in found.items() if pid is not None}


async def ceiling(
    args: argparse.Namespace, infra_s: InfraSettings, procs: Procs, plan: NumberPlan,
    workers: int, tag: str, granted: list[Pipeline],
) -> Result:  # fmt: skip
    """The ceiling: the same messages through a passthrough, one process per worker (as the
    Kafka user ``fleet``, like a worker), on topics granted here (and added to ``granted``)."""
    topics = (f"bench.{tag}.ceiling.requests", f"bench.{tag}.ceiling.receipts")
    pipeline = Pipeline(*topics, f"{topics[1]}.dead-letter", group=f"bench-{tag}-ceiling")
    await grant(infra_s, pipeline)
    granted.append(pipeline)
    await stamped_receipts(infra_s, topics[1])
    names = set()
    for i in range(workers):
        name = f"passthrough-{workers}-{i}"
        names.add(name)
        procs.start(
            name,
            [sys.executable, str(Path(__file__).with_name("passthrough.py")),
             infra_s.kafka_bootstrap, *topics, pipeline.group, *security_args(infra_s)],
        )  # fmt: skip
    await asyncio.sleep(3)
    console.print(f"[bold]ceiling, {workers} passthrough process(es)[/]")
    meter = CpuMeter(broker_pids(infra_s) | {n: procs.pid(n) for n in sorted(names)})
    try:
        steps, sat, half = await sweep("ceiling", infra_s, topics, plan, args, meter)
    finally:
        procs.stop(names)
    security = "on" if infra_s.security else "off"
    return Result("ceiling", workers, steps, sat, half, security, broken=broken(steps, half))


async def run(args: argparse.Namespace, infra_s: InfraSettings, workers_list: list[int]
              ) -> list[Result]:  # fmt: skip
    """The sweeps for each of ``workers_list`` on the brokers of ``infra_s``."""
    security = "on" if infra_s.security else "off"
    console.print(f"[bold]brokers {infra_s.kafka_bootstrap}, {infra_s.mqtt_url}: "
                  f"security {security}[/]")  # fmt: skip
    network = network_dir(BENCH_DIR, args.network)
    console.print(f"network {network}; building the traffic plan")
    plan = build_plan(network, args.seed)
    logs = BENCH_DIR / "logs" / (time.strftime("%Y%m%d-%H%M%S") + f"-security-{security}")
    procs = Procs(logs)
    results: list[Result] = []
    granted: list[Pipeline] = []
    env_args = [
        "--bootstrap", infra_s.kafka_bootstrap, "--network", str(network),
        "--log-format", "json", "--log-level", "info",
    ]  # fmt: skip
    try:
        carrier_args = ["--network", str(network), *carriers_mqtt_args(infra_s, "bench"),
                        "--ledger", str(logs / "ledger.json")]  # fmt: skip
        if args.carrier_latency != 1.0:
            # The engine's own latency: the carriers answer (and report) this much faster.
            scenario = logs / "carrier-latency.toml"
            logs.mkdir(parents=True, exist_ok=True)
            scenario.write_text(
                'name = "carrier latency scaled for the benchmark"\n[[events]]\n'
                f'kind = "latency_spike"\nat = 0\ncarriers = "*"\nfactor = {args.carrier_latency}\n'
            )
            carrier_args += ["--scenario", str(scenario)]
        # Ready once the carrier host publishes its status online (router/tools/demo/signals).
        watcher = observer(infra_s, "bench-observer")
        async with CarrierWatch(watcher, "bench") as watch:
            procs.start("carriers", supernet("carriers", *carrier_args))
            await procs.ready("carriers", watch.host_online.wait())
        for workers in workers_list:
            tag = secrets.token_hex(3)
            if not args.routed_only:
                results.append(
                    await ceiling(args, infra_s, procs, plan, workers, tag, granted)
                )  # fmt: skip

            # The engine: the same traffic through a fleet of workers and the carriers.
            topics = (f"bench.{tag}.routed.requests", f"bench.{tag}.routed.receipts")
            routed = Pipeline(*topics, f"bench.{tag}.dead-letter", group=f"bench-{tag}")
            await grant(infra_s, routed)
            granted.append(routed)
            await stamped_receipts(infra_s, topics[1])
            fleet = f"fleet-{workers}"
            proc = procs.start(
                fleet,
                supernet("fleet", "--workers", str(workers), *env_args,
                         *fleet_mqtt_args(infra_s, f"b{tag}", workers),
                         "--requests-topic", topics[0], "--receipts-topic", topics[1],
                         "--dead-letter-topic", f"bench.{tag}.dead-letter",
                         "--group", f"bench-{tag}", "--dlr-group", f"bench-{tag}",
                         "--metrics-port", str(args.metrics_port), "--instance", f"b{tag}"),
            )  # fmt: skip
            await procs.ready(
                fleet, fleet_ready(kafka_admin(infra_s), f"bench-{tag}", f"b{tag}", workers)
            )
            # A stable group is not yet a consuming one: each worker restores its attempts
            # log in its assignment callback first (and logs "partitions assigned" after).
            await consuming(procs, fleet, workers)
            console.print(f"[bold]routed, {workers} worker(s)[/]")
            spies = []
            if args.profile:
                # A worker, the carriers and this process (the load generator).
                targets = {"worker": min(children(proc.pid), default=None),
                           "carriers": procs.pid("carriers"), "load": os.getpid()}  # fmt: skip
                for what, pid in targets.items():
                    out = Path(args.profile) / f"{what}-{workers}.txt"
                    spy = profile(pid, args.step_s * 3, out) if pid else None
                    if spy is not None:
                        spies.append(spy)
            meter = CpuMeter(
                broker_pids(infra_s) | {"workers": proc.pid, "carriers": procs.pid("carriers")}
            )
            steps, sat, half = await sweep("routed", infra_s, topics, plan, args, meter)
            for spy in spies:
                spy.wait()
            results.append(
                Result("routed", workers, steps, sat, half, security, broken=broken(steps, half))
            )
            procs.stop({fleet})
    finally:
        procs.stop()
        for pipeline in granted:
            await revoke(infra_s, pipeline)
    console.print(f"logs in {logs}")
    return results


async def run_all(args: argparse.Namespace) -> list[Result]:
    """The sweeps on the benchmark's brokers; with --compare-security, the 1-worker sweeps
    again on the brokers without security."""
    if args.use_env_infra:
        return await run(args, InfraSettings.from_env(), args.workers)
    results = await run(args, BENCH_INFRA, args.workers)
    if args.compare_security:
        # Rounds in ABBA order (on, off, off, on, ...), so that neither side always runs
        # first on a machine that warms up or tires over a run.
        order = [OPEN_INFRA] + [OPEN_INFRA, BENCH_INFRA, BENCH_INFRA, OPEN_INFRA] * args.rounds
        for settings in order[: 2 * args.rounds - 1]:
            results += await run(args, settings, [1])
        compare_security(results)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to run (default 1,2)")
    parser.add_argument("--start-rate", type=float, default=1000.0, help="first offered rate")
    parser.add_argument("--factor", type=float, default=1.6, help="rate growth per step")
    parser.add_argument("--max-rate", type=float, default=40_000.0, help="highest offered rate")
    parser.add_argument("--max-steps", type=int, default=8, help="steps per sweep at most")
    parser.add_argument("--step-s", type=float, default=8.0, help="seconds of load per step")
    parser.add_argument("--quick", action="store_true", help="--step-s 4 --max-steps 5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--network", type=Path, help="network directory (default: seed 1)")
    parser.add_argument(
        "--carrier-latency",
        type=float,
        default=1.0,
        help="scale the carriers' submit latency and report delay (e.g. 0.05 to see the "
        "engine's own latency apart from the simulated carriers'); default 1",
    )
    parser.add_argument("--routed-only", action="store_true", help="skip the ceiling runs")
    parser.add_argument("--metrics-port", type=int, default=39400)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--profile", type=Path,
        help="py-spy profiles (--gil, raw) of a worker, the carriers and the load generator "
        "over the first three routed steps go here",
    )  # fmt: skip
    parser.add_argument(
        "--use-env-infra",
        action="store_true",
        help="use the brokers named by SUPERNET_* variables, as they are",
    )
    parser.add_argument("--keep-infra", action="store_true", help="leave the brokers running")
    parser.add_argument(
        "--compare-security",
        action="store_true",
        help="run the 1-worker sweeps again on brokers with security off "
        f"({OPEN_INFRA.state_dir.relative_to(ROOT)}, Kafka :{OPEN_INFRA.kafka_port}, "
        f"MQTT :{OPEN_INFRA.mqtt_port}) and report the ratio on / off",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--compare-security: rounds of on and off sweeps, in ABBA order (default 1)",
    )
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.step_s, args.max_steps = 4.0, 5
    if args.compare_security:
        if args.use_env_infra:
            parser.error("--compare-security runs on the benchmark's own two broker sets")
        if 1 not in args.workers:
            args.workers.insert(0, 1)
    names = ["kafka", "mosquitto"]
    started: list[InfraSettings] = []
    if not args.use_env_infra:
        for settings in [BENCH_INFRA, OPEN_INFRA] if args.compare_security else [BENCH_INFRA]:
            if not infra.status(settings, names):
                started.append(settings)
            infra.up(settings, names)
    began = time.monotonic()
    try:
        results = uvloop.run(run_all(args))
    finally:
        if not args.keep_infra:
            for settings in started:
                infra.down(settings, names)
    console.print(render(results))
    for line in broken_lines(results):
        console.print(f"[red]{line}[/]")
    console.print(
        f"machine: {os.cpu_count()} cores; brokers, carriers and workers share them. "
        f"Run took {time.monotonic() - began:,.0f} s."
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
