"""Hot-path benchmark: full routing decisions per second on one core, with baselines.

Each decision: destination check, encoding and segments, longest-prefix lookup, ranking
(cached by the router per table entry and class), max_price, breaker and throttle check.
The synthetic world is built in ``benchmarks/_hot_path_world.py``: decks of 10k, 100k
and 1M rate lines across >= 1,000 carriers are synthesised from the real mobile prefixes
in ``phonenumbers`` (operators become direct carriers; 60 aggregators resell regions),
with number blocks below the operator prefixes as decks grow. Traffic is skewed by
country (Zipf), then by operator; bodies mix OTP, long, accented, extension-
character and emoji texts; classes and max_price vary; the clock advances 0.2 ms per
message (5,000 msg/s) so throttles fill and spill over, and health changes each
simulated second so cached rankings are invalidated and rebuilt as in production.

Baselines measured in the same run on the same decks and traffic:
(a) naive: probe every prefix length from the longest, collect the candidates, score
    and sort them per message;
(b) SQLite in memory, indexed prefix column, one query per message
    ``... WHERE prefix IN (all prefixes of the number) ORDER BY length(prefix) DESC, price``.

Timing: the process is pinned to one CPU. Throughput is perf_counter_ns around batches
of one simulated second of traffic (5,000 decisions; health churn between batches is
not timed), summed over a pass. Per-decision latency times every decision on its own
with perf_counter_ns and subtracts the median cost of an empty timer pair, so p50/p99
are single decisions, not batch averages. Passes of ours and of both baselines are
interleaved --repeat times and the best pass of each is reported, so a busy spell on a
shared machine does not land on one side of a ratio only.

    python benchmarks/hot_path.py                   # 10k, 100k, 1M lines, ~1-2 min
    python benchmarks/hot_path.py --sizes 10000 --decisions 50000   # quick look
    python benchmarks/hot_path.py --json out.json --breakdown
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

if not __package__:  # run as a script: make `benchmarks._hot_path_world` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._hot_path_world import Naive, Request, Sql, build_network, traffic
from router.core.decision import Router
from router.core.e164 import CountryData, load_country_data
from router.core.health import Health
from router.core.segments import ASCII_BASIC
from router.core.table import RouteTable
from router.core.types import Carrier

TICK = 0.0002  # simulated seconds between messages (5,000 msg/s)


# -- measurement ------------------------------------------------------------------------

Decide = Callable[[str, str, int, float | None, float], object]


def churn(health: Health, carriers: list[Carrier], rng: random.Random, now: float) -> None:
    """A few delivery reports, as arrive every second: the next tick re-ranks lazily."""
    for c in rng.sample(carriers, 3):
        health.delivery(c, "ZZ", rng.random() < 0.9, 2.0, now)


def throughput(
    decide: Decide,
    requests: list[Request],
    total: int,
    health: Health | None,
    carriers: list[Carrier],
    now: float = 0.0,
) -> tuple[float, float]:
    """(ns per decision, simulated clock at the end) over ``total`` decisions."""
    rng = random.Random(7)
    per_second = int(1 / TICK)
    done, elapsed = 0, 0
    n = len(requests)
    while done < total:
        chunk = min(per_second, total - done)
        start = done % n
        batch = requests[start : start + chunk] or requests[:chunk]
        if health is not None:
            churn(health, carriers, rng, now)
        t0 = time.perf_counter_ns()
        for to, body, cls, cap in batch:
            decide(to, body, cls, cap, now)
            now += TICK
        elapsed += time.perf_counter_ns() - t0
        done += len(batch)
    return elapsed / done, now


def latencies(decide: Decide, requests: list[Request], start: float) -> list[float]:
    """Each decision timed on its own, empty-timer overhead subtracted (ns)."""
    clock = time.perf_counter_ns
    empty = []
    for _ in range(20_000):
        t0 = clock()
        empty.append(clock() - t0)
    overhead = statistics.median(empty)
    out = []
    now = start
    for to, body, cls, cap in requests:
        t0 = clock()
        decide(to, body, cls, cap, now)
        out.append(clock() - t0 - overhead)
        now += TICK
    return out


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class Row:
    lines: int
    carriers: int
    prefixes: int
    table_keys: int
    build_s: float
    decisions_per_s: float
    ns_per_decision: float
    p50_ns: float
    p99_ns: float
    naive_ns: float
    sqlite_ns: float
    x_naive: float
    x_sqlite: float


def run_size(lines: int, args: argparse.Namespace, countries: CountryData, say: Console) -> Row:
    net = build_network(lines, countries, args.seed)
    requests = traffic(net, countries, args.requests, args.seed)
    t0 = time.perf_counter()
    table = RouteTable(net.carriers, net.decks, countries)
    build_s = time.perf_counter() - t0
    router = Router(table)
    carriers = list(net.carriers.values())
    naive = Naive(net, countries)
    sql = Sql(net)
    gc.collect()
    gc.freeze()
    # Interleaved passes: each repetition measures ours, then the baselines, so a busy
    # spell on a shared machine hits all three; the best pass of each counts.
    ours = naive_ns = sql_ns = 1e18
    p50 = p99 = 1e18
    now = naive_now = sql_now = 0.0  # each clock runs on across passes, as buckets do
    for _ in range(args.repeat):
        ns, now = throughput(router.decide, requests, args.decisions, router.health, carriers, now)
        ours = min(ours, ns)
        lat = latencies(router.decide, requests[: args.latency_sample], now)
        now += TICK * len(lat)
        p50 = min(p50, percentile(lat, 0.50))
        p99 = min(p99, percentile(lat, 0.99))
        ns, naive_now = throughput(
            naive.decide, requests, args.baseline_decisions, naive.health, carriers, naive_now
        )
        naive_ns = min(naive_ns, ns)
        ns, sql_now = throughput(sql.decide, requests, args.sql_decisions, None, carriers, sql_now)
        sql_ns = min(sql_ns, ns)
    stats = table.stats()
    row = Row(
        lines=net.lines,
        carriers=len(net.carriers),
        prefixes=stats["prefixes"],
        table_keys=stats["keys"],
        build_s=round(build_s, 2),
        decisions_per_s=round(1e9 / ours),
        ns_per_decision=round(ours),
        p50_ns=round(p50),
        p99_ns=round(p99),
        naive_ns=round(naive_ns),
        sqlite_ns=round(sql_ns),
        x_naive=round(naive_ns / ours, 1),
        x_sqlite=round(sql_ns / ours, 1),
    )
    say.print(f"  {lines:>9,} lines done: {row.decisions_per_s:,} decisions/s", style="dim")
    gc.unfreeze()
    del table, router, naive, sql, net
    gc.collect()
    return row


def breakdown(countries: CountryData, args: argparse.Namespace) -> dict[str, float]:
    """Cost of each stage of the fast path, measured as cumulative variants (ns)."""
    net = build_network(100_000, countries, args.seed)
    requests = traffic(net, countries, args.requests, args.seed)
    table = RouteTable(net.carriers, net.decks, countries)
    router = Router(table)
    get, root = table.by_key.get, table.root

    def loop_only(to: str, body: str, cls: int, cap: float | None, now: float) -> object:
        return None

    def e164(to: str, body: str, cls: int, cap: float | None, now: float) -> object:
        d = to[1:]
        return d.isdigit() and d.isascii() and to[0] == "+" and 7 <= len(d) <= 15

    def segs(to: str, body: str, cls: int, cap: float | None, now: float) -> object:
        nb = len(body)
        return body.isascii() and 0 < nb <= 1600 and not body.encode().translate(None, ASCII_BASIC)

    def lookup(to: str, body: str, cls: int, cap: float | None, now: float) -> object:
        d = to[1:]
        e = get(d[:root])
        while e is not None and e.next:
            x = get(d[: e.next])
            if x is None:
                break
            e = x
        return e

    stages: list[tuple[str, Decide]] = [
        ("call + loop", loop_only),
        ("destination check", e164),
        ("segments (ASCII fast path)", segs),
        ("lookup (trie probes)", lookup),
        ("full decision, first pass (rankings computed)", router.decide),
        ("full decision, warm (rankings cached)", router.decide),
    ]
    out: dict[str, float] = {}
    now = 0.0
    for name, fn in stages:
        ns, now = throughput(fn, requests, len(requests), None, [], now)
        out[name] = round(ns)
    probes = []
    for to, *_ in requests[:20_000]:
        d, k = to[1:], 1
        e = get(d[:root])
        while e is not None and e.next and e.next <= len(d):
            k += 1
            e = get(d[: e.next])
        probes.append(k)
    out["mean dict probes per lookup"] = round(statistics.mean(probes), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Routing hot path: decisions per second at 10k/100k/1M deck lines, "
        "against a naive per-message scan and a per-message SQLite query.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--sizes", default="10000,100000,1000000", help="deck lines, comma-separated")
    p.add_argument("--decisions", type=int, default=200_000, help="decisions per timed pass")
    p.add_argument("--baseline-decisions", type=int, default=60_000, help="for baseline (a)")
    p.add_argument("--sql-decisions", type=int, default=10_000, help="for baseline (b)")
    p.add_argument("--requests", type=int, default=100_000, help="distinct requests generated")
    p.add_argument("--latency-sample", type=int, default=50_000, help="decisions timed singly")
    p.add_argument(
        "--cpu", type=int, default=-1, help="pin to this CPU (default: the last one; -2: no pin)"
    )
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best counts")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--breakdown", action="store_true", help="also time each stage at 100k")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if args.cpu != -2 and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[args.cpu] if args.cpu < 0 else args.cpu})
    say = Console(width=max(Console().width, 150))
    countries = load_country_data()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [run_size(n, args, countries, say) for n in sizes]

    t = Table(title="supernet routing hot path (one core, CPython "
              f"{sys.version_info.major}.{sys.version_info.minor})")  # fmt: skip
    for col in ("deck lines", "carriers", "prefixes", "build s", "decisions/s", "ns/decision",
                "p50 ns", "p99 ns", "naive ns", "sqlite ns", "x naive", "x sqlite"):  # fmt: skip
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            f"{r.lines:,}", f"{r.carriers:,}", f"{r.prefixes:,}", f"{r.build_s}",
            f"{r.decisions_per_s:,}", f"{r.ns_per_decision:,}", f"{r.p50_ns:,}",
            f"{r.p99_ns:,}", f"{r.naive_ns:,}", f"{r.sqlite_ns:,}", f"{r.x_naive}",
            f"{r.x_sqlite}",
        )  # fmt: skip
    say.print(t)
    result: dict[str, object] = {"rows": [asdict(r) for r in rows]}
    if len(rows) > 1:
        scale = rows[-1].ns_per_decision / rows[0].ns_per_decision
        result["cost_largest_vs_smallest"] = round(scale, 2)
        say.print(f"cost per decision at {rows[-1].lines:,} vs {rows[0].lines:,} lines: "
                  f"{scale:.2f}x")  # fmt: skip
    if args.breakdown:
        parts = breakdown(countries, args)
        result["breakdown_ns"] = parts
        bt = Table(title="where the time goes (100k lines, ns per message, each stage alone)")
        bt.add_column("stage")
        bt.add_column("ns", justify="right")
        for k, v in parts.items():
            bt.add_row(k, f"{v}")
        say.print(bt)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        say.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
