"""Chaos benchmark: the whole engine under faults, on the project's own brokers on their
own ports and state directory (.supernet/chaos), so that Kafka and Mosquitto can be
SIGKILLed and restarted without touching anyone else's. They run secured, as `supernet
infra up` runs them (TLS, authentication, ACLs): each scenario's carriers, fleet slots and
readiness watch connect as MQTT identities of their own, provisioned for it.

Every scenario starts fresh topics (unique names), one `supernet carriers` process on
the seed-1 network writing its journal (`--journal`: the carriers' ground truth), a fleet
of workers (`supernet fleet`) and `supernet load` at --rate for --duration seconds, and
during the load:

  worker-kill        SIGKILL one worker (alternating slots) every --kill-every seconds;
  kafka-restart      SIGKILL the Kafka broker (pid file of `supernet infra up`) at
                     --fault-at of the run, `supernet infra up --only kafka` --down-s later;
  mosquitto-restart  the same for Mosquitto;
  kafka-node-kill    (--kafka-nodes 3 only) SIGKILL Kafka node 2 of a three-node cluster at
                     --fault-at, `supernet infra up --only kafka` --down-s later;
  carriers-restart   SIGKILL the carriers, start them again --down-s later with the same
                     arguments and journal;
  hostile            kcat, a foreign client, mixes --hostile records of the kinds in
                     KINDS into the requests topic, each with its expected outcome (a dead
                     letter, a `failed` receipt with a code, or `sent`), the two poison
                     pills of issue 9 among them;
  repeats            --repeat-ids ids are each produced three times, 0.5 to 5 s apart,
                     as a producer that retries.

After the load, the run waits until outcomes stop arriving (at most --settle-s), stops
the carriers (their journal is then complete) and the fleet, reads the run's topics
back from Kafka and reports, per scenario: requests produced, with an outcome (`sent`
or `failed` receipt, or a dead letter), lost (none), ids accepted by two or more
carriers (journal), delivery reports published but never a receipt (journal vs
receipts by (id, status)), duplicate receipts (same (id, status) again), worker
restarts (the fleet's "worker exited; restarting"), seconds of the load window without
any outcome, recovery (seconds from the fault's end until outcomes per second are back
to half the pre-fault median, two seconds in a row) and requests produced after recovery
that failed with 39001, 30008 or 30001. The baseline is the same run before its fault.

    .venv/bin/python benchmarks/chaos.py --quick                   # ~20 s per scenario
    .venv/bin/python benchmarks/chaos.py                           # 120 s per scenario
    .venv/bin/python benchmarks/chaos.py --scenarios hostile,repeats --out out/c.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make `benchmarks._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from benchmarks._chaos_scenario import (
    CLUSTER_ONLY,
    DEFAULT_SCENARIOS,
    SCENARIOS,
    Run,
    console,
    numbers_of,
    run_scenario,
)
from benchmarks._chaos_table import COLUMNS, render, render_hostile, verdicts
from benchmarks._harness import ROOT, infra_up, network_dir
from router.support.infra_settings import KAFKA_NODE_COUNTS, InfraSettings
from router.tools.infra import lifecycle as infra
from router.tools.load.numbers import build_plan

# The parts: _chaos_hostile (the hostile mix and the foreign client), _chaos_scenario (one
# scenario, start to end), _chaos_figures (the figures, pure), _chaos_table (the table).

CHAOS_DIR = ROOT / ".supernet" / "chaos"

# -- main --------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, settings: InfraSettings, out: list[dict[str, Any]],
                  notes: list[str]) -> None:  # fmt: skip
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    network = await asyncio.to_thread(network_dir, args.state_dir, args.network)
    console.print(f"network {network}; building the traffic plan")
    plan = await asyncio.to_thread(build_plan, network, args.seed)
    logs = args.state_dir / "logs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    client_log = logging.FileHandler(logs / "kafka-client.log")  # reconnect noise
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).addHandler(client_log)
        logging.getLogger(name).propagate = False
    run = Run(args, settings, network, plan, logs, numbers_of(plan, 64, args.seed), notes)
    for name in args.scenarios:
        try:
            result = await run_scenario(name, run)
        except Exception as e:  # one scenario's failure is reported; the others still run
            console.print(f"[red]{name} failed:[/] {e!r}")
            result = {"scenario": name, "error": repr(e)[:300]}
        out.append(result)
        if "figures" in result:
            f = result["figures"]
            console.print(f"  {name}: {f['produced']:,} produced, {f['lost']:,} lost, "
                          f"{f['restarts']} restarts, {result['seconds']:.0f} s")  # fmt: skip
    console.print(f"logs in {logs}")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scenarios",
        default=None,
        help=f"comma-separated, in order (default: {','.join(DEFAULT_SCENARIOS)}; with "
        f"--kafka-nodes 3: {','.join(sorted(CLUSTER_ONLY))}; any of {','.join(SCENARIOS)})",
    )
    p.add_argument(
        "--kafka-nodes", type=int, choices=KAFKA_NODE_COUNTS, default=1,
        help="Kafka as one node (default) or a three-node cluster, for kafka-node-kill",
    )  # fmt: skip
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --duration 20 --kill-every 5 --down-s 5 --hostile 2000 "
        "--repeat-ids 200 --settle-s 30 (flags given still win)",
    )
    p.add_argument("--duration", type=float, help="seconds of load per scenario (default 120)")
    p.add_argument("--rate", type=float, default=750.0, help="requests/s of load (default 750)")
    p.add_argument("--workers", type=int, default=2, help="workers in the fleet (default 2)")
    p.add_argument("--kill-every", type=float, help="worker-kill: seconds between kills (10)")
    p.add_argument(
        "--fault-at",
        type=float,
        default=1 / 3,
        help="restart scenarios: kill at this share of the run (default 1/3)",
    )
    p.add_argument(
        "--down-s", type=float, help="seconds a killed broker or carrier stays down (10)"
    )
    p.add_argument("--hostile", type=int, help="hostile records (default 10,000)")
    p.add_argument("--repeat-ids", type=int, help="ids produced three times (default 1,000)")
    p.add_argument(
        "--settle-s",
        type=float,
        help="after the load, wait at most this long for outcomes, and again for "
        "delivery reports (default 40: 30 s + the submit timeout)",
    )
    p.add_argument("--submit-timeout-s", type=float, help="passed to the workers (their default)")
    p.add_argument("--hold-limit-s", type=float, help="passed to the workers if they have it")
    p.add_argument("--dedupe-window-s", type=float, help="passed to the workers if they have it")
    p.add_argument("--partitions", type=int, default=12, help="partitions per topic (12)")
    p.add_argument(
        "--network",
        type=Path,
        help="network directory (default: seed 1, generated once under the state dir)",
    )
    p.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
    # The brokers' ports sit below Linux's ephemeral range (32768-60999), where an outgoing
    # connection's local port could take one while its broker is down for a restart.
    p.add_argument("--kafka-port", type=int, default=31192)
    p.add_argument("--kafka-controller-port", type=int, default=31193)
    p.add_argument("--mqtt-port", type=int, default=31983)
    p.add_argument(
        "--prometheus-port",
        type=int,
        default=31190,
        help="kept off others' ports; Prometheus is not started (default 31190)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=31500,
        help="first worker's /metrics port; worker i uses +i (default 31500)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=CHAOS_DIR,
        help=f"brokers' state, the network and logs (default {CHAOS_DIR})",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/chaos/chaos.json"),
        help="JSON with every scenario's figures (default out/chaos/chaos.json)",
    )
    p.add_argument("--keep", action="store_true", help="leave the brokers running at the end")
    args = p.parse_args(argv)
    quick = {"duration": 20.0, "kill_every": 5.0, "down_s": 5.0, "hostile": 2000,
             "repeat_ids": 200, "settle_s": 30.0}  # fmt: skip
    full = {"duration": 120.0, "kill_every": 10.0, "down_s": 10.0, "hostile": 10_000,
            "repeat_ids": 1000, "settle_s": 40.0}  # fmt: skip
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.scenarios is None:
        default = sorted(CLUSTER_ONLY) if args.kafka_nodes == 3 else DEFAULT_SCENARIOS
        args.scenarios = ",".join(default)
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.kafka_nodes != 3 and set(args.scenarios) & CLUSTER_ONLY:
        p.error(f"{', '.join(sorted(set(args.scenarios) & CLUSTER_ONLY))} needs --kafka-nodes 3")
    args.state_dir = args.state_dir.resolve()
    return args


def main() -> int:
    args = parse()
    settings = InfraSettings(
        host="127.0.0.1", kafka_port=args.kafka_port,
        kafka_controller_port=args.kafka_controller_port, mqtt_port=args.mqtt_port,
        prometheus_port=args.prometheus_port, state_dir=args.state_dir,
        kafka_nodes=args.kafka_nodes,
    )  # fmt: skip
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    interrupted = False
    console.print(f"brokers: Kafka {settings.kafka_bootstrap}, MQTT {settings.mqtt_url}, "
                  f"state {settings.state_dir}")  # fmt: skip
    try:
        infra_up(settings, ["kafka", "mosquitto"])
        uvloop.run(run_all(args, settings, results, notes))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        console.print("[yellow]interrupted: stopping everything[/]")
    finally:
        if not args.keep:
            infra.down(settings, ["kafka", "mosquitto"])
    seconds = time.monotonic() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({
        "config": config, "seconds": round(seconds, 1), "cores": os.cpu_count(),
        "interrupted": interrupted, "notes": list(dict.fromkeys(notes)),
        "targets": {h: t for h, _, t, _ in COLUMNS if t}, "scenarios": results,
    }, indent=1, default=str) + "\n")  # fmt: skip
    console.print(render(results, args))
    for r in results:
        hostile = render_hostile(r)
        if hostile is not None:
            console.print(hostile)
    for r in results:
        if "error" in r:
            console.print(f"[red]{r['scenario']} failed:[/] {r['error']}")
    for note in dict.fromkeys(notes):
        console.print(f"note: {note}")
    marks = [(r["scenario"], h, ok) for r in results for h, ok in verdicts(r, args).items()]
    short = [f"{s} {h}" for s, h, ok in marks if not ok]
    console.print(f"{len(marks) - len(short)} of {len(marks)} targets met"
                  + (f"; SHORT: {', '.join(short)}" if short else ""))  # fmt: skip
    console.print(f"{os.cpu_count()} cores shared by brokers, carriers, workers and load; "
                  f"total time {seconds:,.0f} s")  # fmt: skip
    console.print(f"wrote {args.out}")
    return 130 if interrupted else (1 if short else 0)


if __name__ == "__main__":
    sys.exit(main())
