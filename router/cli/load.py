"""`supernet load`: realistic send requests at a controlled rate, then the outcome report."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

from router.contracts import network_file
from router.engine.kafka import KafkaError
from router.support.argtypes import positive
from router.support.credentials import CredentialsError
from router.support.infra_settings import InfraSettings
from router.tools.load.mix import Mix, MixError, example_path, load_mix
from router.tools.load.numbers import NumberPlanError, build_plan
from router.tools.load.pace import Pacer
from router.tools.load.report import Latency, Summary
from router.tools.load.run import LoadConfig, run_load
from router.tools.load.traffic import Traffic

DESCRIPTION = """\
Produce realistic send requests to Kafka at a controlled rate, then read the receipts
and report outcomes by status and error code, and latency from request to `sent` and to
`delivered`.

The traffic is seeded (same seed and mix, same messages; only ids and created_at differ
between runs): destinations weighted by country the way A2P SMS traffic is (US, IN, ID,
BR, GB, NG, MX, ... and a long tail), valid mobile numbers built from the network's deck
prefixes, a share of invalid ones, the three classes, GSM-7 and Unicode bodies of 1 to
10+ segments, price caps (some too low on purpose), validity periods.

Exit code 0 when every request got an outcome receipt (sent or failed), 1 otherwise."""

EPILOG = """\
mix file (--mix FILE, TOML; every key optional, tables replace the default table):
  invalid_share = 0.005     destinations that are not valid numbers
  unicode_share = 0.15      bodies outside GSM-7 (emoji, Cyrillic, Arabic, CJK)
  cap_share = 0.20          requests with a max_price
  cap_too_low_share = 0.15  of the capped: cap below the cheapest route, on purpose
  validity_share = 0.30     requests with a validity_s
  sender_share = 0.60       requests with a "from"
  tail_share = 0.10         traffic to reachable countries not in [countries]
  accounts = 8              distinct accounts (a few send most: Zipf)
  [classes]   otp = 0.3, transactional = 0.5, marketing = 0.2
  [segments]  single = 0.78, double = 0.14, multi = 0.06 (3-5), long = 0.02 (6+)
  [countries] US = 20.0, IN = 12.0, ID = 6.0, ... (ISO code = relative weight)
  A commented sample: {example}

examples:
  supernet load --rate 1000 --duration 60
  supernet load --rate 20000 --count 100000 --wait-s 5 --json load.json
  supernet load --rate 500 --count 5000 --seed 7 --mix my-mix.toml --network ./net
"""


def _default_network() -> Path:
    from router.core.network import example_network

    return example_network()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = InfraSettings.from_env()
    p = subparsers.add_parser(
        "load",
        help="realistic load at a controlled rate, with an outcome and latency report",
        description=DESCRIPTION,
        epilog=EPILOG.format(example=example_path()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rate", type=positive(float), required=True, metavar="R",
                   help="messages per second")  # fmt: skip
    bound = p.add_mutually_exclusive_group(required=True)
    bound.add_argument("--count", type=positive(int), metavar="N", help="messages to send")
    bound.add_argument("--duration", type=positive(float), metavar="S",
                       help="seconds to send for (rate x S messages)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1, help="traffic seed (default: 1)")
    p.add_argument("--mix", type=Path, metavar="FILE", help="TOML file overriding the mix")
    p.add_argument("--network", type=Path, metavar="DIR",
                   help="network directory whose deck prefixes give the numbers "
                        "(default: the shipped example network)")  # fmt: skip
    p.add_argument("--bootstrap", default=defaults.kafka_bootstrap, metavar="HOST:PORT",
                   help=f"Kafka bootstrap (default: {defaults.kafka_bootstrap})")  # fmt: skip
    p.add_argument("--producer-user", default="producer", metavar="USER",
                   help="Kafka user that writes the requests (default: producer; its password "
                        "from the credentials store, or SUPERNET_KAFKA_PASSWORD)")  # fmt: skip
    p.add_argument("--receipts-user", default="receipts", metavar="USER",
                   help="Kafka user that reads the receipts (default: receipts)")  # fmt: skip
    p.add_argument("--create-topics", action=argparse.BooleanOptionalAction, default=True,
                   help="create missing topics as the admin user (default: yes)")  # fmt: skip
    p.add_argument("--requests-topic", default="sms.requests", metavar="T",
                   help="topic to produce to (default: sms.requests)")  # fmt: skip
    p.add_argument("--receipts-topic", default="sms.receipts", metavar="T",
                   help="topic to read receipts from (default: sms.receipts)")  # fmt: skip
    p.add_argument("--wait-s", type=float, default=30.0, metavar="S",
                   help="seconds to wait for outcome receipts after the last send, and as "
                        "much again for delivery receipts (default: 30)")  # fmt: skip
    p.add_argument("--id-prefix", metavar="P",
                   help="id prefix (default: ld<seed>-<random>-, new each run)")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    console = Console()
    err = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
    try:
        mix = load_mix(args.mix) if args.mix else Mix()
        network = args.network or _default_network()
        plan = build_plan(network, args.seed)
    except (MixError, NumberPlanError, network_file.NetworkFileError, OSError) as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    prefix = args.id_prefix or f"ld{args.seed}-{secrets.token_hex(3)}-"
    traffic = Traffic(plan, mix, args.seed, prefix)
    pacer = (
        Pacer(args.rate, args.count) if args.count else Pacer.for_duration(args.rate, args.duration)
    )
    store = InfraSettings.from_env().secrets()
    try:
        config = LoadConfig(
            producer=store.kafka(args.bootstrap, args.producer_user),
            receipts=store.kafka(args.bootstrap, args.receipts_user),
            admin=store.kafka(args.bootstrap, "admin") if args.create_topics else None,
            requests_topic=args.requests_topic,
            receipts_topic=args.receipts_topic,
            wait_s=args.wait_s,
            progress=console.is_terminal and not args.no_progress,
        )
    except CredentialsError as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    console.print(
        f"load: {pacer.total:,} requests at {args.rate:,.0f}/s to {args.requests_topic} "
        f"on {args.bootstrap} (seed {args.seed}, ids {prefix}*, network {network})"
    )
    try:
        summary = uvloop.run(run_load(config, traffic, pacer, console))
    except KafkaError as e:
        err.print(f"[red]error:[/] Kafka at {args.bootstrap}: {e}")
        return 2
    console.print(render(summary))
    if args.json:
        args.json.write_text(json.dumps(summary.to_dict(), indent=1) + "\n", encoding="utf-8")
    if summary.without_outcome:
        err.print(
            f"[yellow]{summary.with_outcome:,} of {summary.produced:,} have an outcome[/]: "
            f"{summary.without_outcome:,} requests got no sent/failed receipt "
            f"within {args.wait_s:g} s"
        )
        return 1
    return 0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def render(s: Summary) -> Table:
    """The report as one rich table."""
    t = Table(title="supernet load", show_header=False, title_justify="left")
    t.add_column("figure", style="bold")
    t.add_column("value", justify="right")
    t.add_row("requests produced", f"{s.produced:,}")
    t.add_row("produce rate", f"{s.produce_rate:,.0f}/s (target {s.target_rate:,.0f}/s, "
              f"{s.produce_seconds:.2f} s)")  # fmt: skip
    t.add_row("with an outcome", f"{s.with_outcome:,} of {s.produced:,}")
    t.add_row("without an outcome", f"{s.without_outcome:,}")
    for status, n in s.by_status.items():
        t.add_row(f"  {status}", f"{n:,}")
    for code, n in s.by_error.items():
        t.add_row(f"  {code}", f"{n:,}")
    t.add_row("sent, no delivery receipt yet", f"{s.sent_without_delivery:,}")
    for name, lat in (
        ("request -> submitted", s.latency_submitted),
        ("request -> sent", s.latency_sent),
        ("carrier accept -> durable", s.latency_durable),
        ("request -> delivered", s.latency_delivered),
    ):
        t.add_row(f"{name} (ms)", _latency(lat))
    rate = "-" if s.outcomes_per_second is None else f"{s.outcomes_per_second:,.0f}/s"
    t.add_row("outcome throughput", rate)
    t.add_row("receipts read", f"{s.receipts:,} ({s.duplicates:,} duplicates, "
              f"{s.foreign:,} of other runs, {s.undecodable:,} undecodable)")  # fmt: skip
    return t


def _latency(lat: Latency) -> str:
    if not lat.count:
        return "-"
    return (f"p50 {_ms(lat.p50_ms)}  p90 {_ms(lat.p90_ms)}  p99 {_ms(lat.p99_ms)}  "
            f"max {_ms(lat.max_ms)}  (n={lat.count:,})")  # fmt: skip
