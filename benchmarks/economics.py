"""Economics benchmark: supernet against always-direct, always-cheapest and an oracle.

Every policy routes the same requests (the load generator's seeded default mix) over the
same simulated network (fresh ``carriers.endpoint.Endpoint``s from the same seeds), on a
virtual clock: submit results and delivery reports come back after their simulated
delays and feed supernet's health in time order. See ``router/tools/economics.py`` for what
each policy does and how every figure is counted.

Offered rate: 2,000 messages per second of virtual time by default. At that rate the
busiest destinations push direct operators past their throughput caps now and then
(always-direct sees about 5% of its submits throttled and fails over), while the
aggregators' caps (800-3,000 msg/s each) still leave room: supernet and the oracle, which
lean on aggregators, do not fill their own buckets at this rate. At 500 msg/s no cap
binds; at 5,000 the cheapest aggregator's binds (always-cheapest throttled ~8%) and the
oracle's buckets start to spill decisions to the next route.

Targets (issue 6): supernet's cost per delivered message within 5% of the oracle's, at
least 15% below always-direct's, and a delivery rate above always-cheapest's.

    .venv/bin/python benchmarks/economics.py                 # 100,000 messages, ~1-2 min
    .venv/bin/python benchmarks/economics.py --quick         # 20,000 messages
    .venv/bin/python benchmarks/economics.py --json out/economics.json --plot out/econ.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from router.contracts import network_file
from router.tools import economics
from router.tools.economics import POLICIES, PolicyResult

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".supernet" / "bench"
DEFAULT_COUNT = 100_000
QUICK_COUNT = 20_000

TARGET_ORACLE = 1.05  # supernet's cost per delivered <= 1.05 x the oracle's
TARGET_DIRECT = 0.85  # ... <= 0.85 x always-direct's


def network_dir(seed: int, console: Console) -> Path:
    """The cached generated network for ``seed``; generated (atomically) if absent."""
    path = CACHE / f"network-{seed}"
    if (path / "network.json").exists():
        try:
            if network_file.load(path).seed == seed:
                return path
        except network_file.NetworkFileError:
            pass
    from carriers.generator import generate, write  # only when the cache is cold

    with console.status(f"generating network seed {seed} into {path} ..."):
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"network-{seed}.", dir=CACHE))
        write(generate(seed), tmp)
        if path.exists():
            import shutil

            shutil.rmtree(path)
        tmp.rename(path)
    return path


def targets(results: dict[str, PolicyResult]) -> list[dict[str, object]]:
    """Each target: what it compares, the measured ratio, the bound, PASS or SHORT."""
    out: list[dict[str, object]] = []
    s = results.get("supernet")
    if s is None:
        return out
    o, d, c = results.get("oracle"), results.get("always-direct"), results.get("always-cheapest")
    if o is not None:
        ratio = s.cost_per_delivered_usd / o.cost_per_delivered_usd
        out.append(
            {
                "target": "cost per delivered vs oracle",
                "value": ratio,
                "bound": f"<= {TARGET_ORACLE:.2f}",
                "pass": ratio <= TARGET_ORACLE,
            }
        )
    if d is not None:
        ratio = s.cost_per_delivered_usd / d.cost_per_delivered_usd
        out.append(
            {
                "target": "cost per delivered vs always-direct",
                "value": ratio,
                "bound": f"<= {TARGET_DIRECT:.2f}",
                "pass": ratio <= TARGET_DIRECT,
            }
        )
    if c is not None:
        diff = s.delivery_rate - c.delivery_rate
        out.append(
            {
                "target": "delivery rate minus always-cheapest's",
                "value": diff,
                "bound": "> 0",
                "pass": diff > 0,
            }
        )
    return out


def outcome_table(results: list[PolicyResult]) -> Table:
    t = Table(title="Outcomes (deliv. rate: delivered / routed; reported: in the reports)")
    t.add_column("policy", no_wrap=True)
    for col in ("routed", "sent", "delivered", "deliv. rate", "reported", "failed", "on aggs"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in results:
        t.add_row(
            r.name,
            f"{r.routed:,}",
            f"{r.sent:,}",
            f"{r.delivered:,}",
            f"{r.delivery_rate:.2%}",
            f"{r.reported_delivery_rate:.2%}",
            f"{r.failed:,}",
            f"{r.aggregator_share:.1%}",
        )
    return t


def cost_table(results: list[PolicyResult], seconds: dict[str, float]) -> Table:
    t = Table(title="Cost and attempts (USD/deliv.: cost / delivered)")
    t.add_column("policy", no_wrap=True)
    for col in ("cost USD", "USD/deliv.", "attempts", "failovers", "throttled", "spilled", "held",
                "run s"):  # fmt: skip
        t.add_column(col, justify="right", no_wrap=True)
    for r in results:
        t.add_row(
            r.name,
            f"{r.cost_usd:,.2f}",
            f"{r.cost_per_delivered_usd:.5f}",
            f"{r.mean_attempts:.3f}",
            f"{r.failovers:,}",
            f"{r.throttled:,}",
            f"{r.spilled:,}",
            f"{r.held:,}",
            f"{seconds[r.name]:.1f}",
        )
    return t


def targets_table(rows: list[dict[str, object]]) -> Table:
    t = Table(title="Targets (supernet)")
    for col in ("target", "measured", "bound", ""):
        t.add_column(col, justify="left" if col == "target" else "right")
    for row in rows:
        value = row["value"]
        assert isinstance(value, float)
        shown = f"{value:+.2%}" if "minus" in str(row["target"]) else f"{value:.3f}x"
        mark = "[green]PASS[/]" if row["pass"] else "[red]SHORT[/]"
        t.add_row(str(row["target"]), shown, str(row["bound"]), mark)
    return t


def plot(results: list[PolicyResult], path: Path) -> None:
    """Cost per delivered message and delivery rate by policy, side by side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    colours = ["#1f77b4" if n == "supernet" else "#999999" for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, [r.cost_per_delivered_usd * 1000 for r in results], color=colours)
    left.set_ylabel("USD per 1,000 delivered messages")
    left.set_title("Cost per delivered message")
    right.bar(names, [r.delivery_rate * 100 for r in results], color=colours)
    right.set_ylabel("% of routable requests delivered")
    right.set_title("Delivery rate")
    low = min(r.delivery_rate for r in results) * 100
    right.set_ylim(max(0.0, low - 10), 100)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Routing economics: supernet vs always-direct, always-cheapest and "
        "an oracle that knows every carrier's true delivery probability, on the same "
        "seeded traffic over the same simulated network (virtual clock, no brokers).",
    )
    p.add_argument(
        "--network",
        type=Path,
        help="network directory (default: seed 1, "
        "generated once and cached in .supernet/bench/network-1)",
    )
    p.add_argument(
        "--count", type=int, default=DEFAULT_COUNT, help="requests (default %(default)s)"
    )
    p.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT:,} requests")
    p.add_argument("--seed", type=int, default=1, help="traffic seed (default %(default)s)")
    p.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        help="offered msg/s of virtual time (default %(default)s)",
    )
    p.add_argument(
        "--policies", default=",".join(POLICIES), help="comma-separated subset (default: all four)"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    p.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG (needs matplotlib)")
    args = p.parse_args(argv)
    count = QUICK_COUNT if args.quick else args.count
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or count < 1 or args.rate <= 0:
        p.error(f"policies must be among {', '.join(POLICIES)}; --count and --rate positive")

    console = Console()
    if not console.is_terminal:  # a pipe or a file: wide enough for the tables
        console = Console(width=110)
    directory = args.network or network_dir(1, console)
    t0 = time.perf_counter()
    with console.status(f"loading {directory} ..."):
        net = economics.Network(directory)
    with console.status(f"drawing {count:,} requests (traffic seed {args.seed}) ..."):
        jobs = economics.prepare(net.table, count, args.seed, args.rate, directory)
    console.print(
        f"network {directory} ({len(net.specs):,} carriers), {count:,} requests at "
        f"{args.rate:,.0f} msg/s virtual ({jobs[-1].at:,.1f} s), traffic seed {args.seed}; "
        f"set-up {time.perf_counter() - t0:.1f} s"
    )
    results: list[PolicyResult] = []
    seconds: dict[str, float] = {}
    for name in names:
        with console.status(f"running {name} ..."):
            t = time.perf_counter()
            results.append(economics.simulate(economics.make_contender(name, net), jobs, net))
            seconds[name] = time.perf_counter() - t
    console.print(outcome_table(results))
    console.print(cost_table(results, seconds))
    checks = targets({r.name: r for r in results})
    if checks:
        console.print(targets_table(checks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "network": str(directory),
            "count": count,
            "seed": args.seed,
            "rate": args.rate,
            "machine": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "results": [
                {
                    k: (None if isinstance(v, float) and math.isinf(v) else v)
                    for k, v in asdict(r).items()
                }
                | {"run_s": seconds[r.name]}
                for r in results
            ],
            "targets": checks,
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        console.print(f"figures written to {args.json}")
    if args.plot:
        try:
            plot(results, args.plot)
        except ImportError:
            console.print("[yellow]--plot needs matplotlib: .venv/bin/pip install -e .[/]")
            return 2
        console.print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
