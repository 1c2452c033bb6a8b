"""`supernet network generate|stats` and `supernet carriers`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import textwrap
import time
from pathlib import Path

import structlog
import uvloop
from prometheus_client import CollectorRegistry, start_http_server

from carriers import generator, network, scenario
from carriers.deck import DeckError
from carriers.endpoint import Endpoint
from carriers.host import CarrierHost
from carriers.journal import Journal, JournalError
from carriers.ledger import Ledger, register_metrics
from carriers.simulation import SimulationFileError
from router.contracts import interconnect
from router.contracts.network_file import NetworkFileError
from router.support import heap, logs
from router.support.argtypes import positive
from router.support.credentials import CredentialsError, MqttAccess, Secrets, check_name
from router.support.infra_settings import InfraSettings
from router.support.targets import write_target

log = structlog.get_logger("carriers.cli")

_FORMATTER = argparse.RawDescriptionHelpFormatter


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_network(subparsers)
    _register_carriers(subparsers)


# ---- supernet network ---------------------------------------------------------------


def _register_network(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    net = subparsers.add_parser(
        "network",
        help="build and describe the simulated super network",
        description=textwrap.dedent(
            """\
            Build the simulated super network from real numbering data (the mobile
            prefix -> operator data that ships with `phonenumbers`): one direct carrier
            per operator and country on its real prefixes, plus global and regional
            aggregators. Writes network.json (what a router may know), simulation.json
            (the simulator's hidden truth) and decks/<carrier>.csv (rate decks).
            """
        ),
        formatter_class=_FORMATTER,
        epilog=textwrap.dedent(
            """\
            examples:
              supernet network generate --seed 1 --out .supernet/network
              supernet network stats .supernet/network
            """
        ),
    )
    sub = net.add_subparsers(dest="network_command", metavar="ACTION", required=True)

    gen = sub.add_parser(
        "generate",
        help="generate a network directory (same seed, same files, byte for byte)",
        description="Generate a network directory. Same seed, same files, byte for byte.",
        formatter_class=_FORMATTER,
        epilog="example:\n  supernet network generate --seed 1 --out .supernet/network",
    )
    gen.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    gen.add_argument("--out", type=Path, required=True, help="directory to write")
    gen.set_defaults(func=_generate)

    st = sub.add_parser(
        "stats",
        help="count carriers, prefixes, country codes and rate lines of a network",
        description="Describe a generated network directory.",
        formatter_class=_FORMATTER,
        epilog="example:\n  supernet network stats .supernet/network",
    )
    st.add_argument("directory", type=Path, help="network directory")
    st.set_defaults(func=_stats)


def _generate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    generated = generator.generate(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    generator.write(generated, out)
    elapsed = time.perf_counter() - started
    print(f"network {generated.network.name} written to {out} in {elapsed:.1f} s")
    return _print_stats(out)


def _stats(args: argparse.Namespace) -> int:
    return _print_stats(args.directory)


def _print_stats(directory: Path) -> int:
    try:
        s = network.stats(directory)
    except (NetworkFileError, DeckError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [
        ("seed", s.seed),
        ("carriers", s.carriers),
        ("  direct", s.direct),
        ("  aggregators", s.aggregators),
        ("prefixes (distinct)", s.prefixes),
        ("  on direct carriers", s.direct_prefixes),
        ("country calling codes", s.country_codes),
        ("regions", s.regions),
        ("rate lines", s.rate_lines),
        ("  direct", s.direct_rate_lines),
        ("  aggregators", s.aggregator_rate_lines),
    ]
    for name, value in rows:
        print(f"{name:<24}{value:>10}")
    return 0


# ---- supernet carriers --------------------------------------------------------------


def _register_carriers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = InfraSettings.from_env()
    p = subparsers.add_parser(
        "carriers",
        help="run simulated carrier endpoints over MQTT",
        description=textwrap.dedent(
            """\
            Run the carriers of a generated network as MQTT endpoints against Mosquitto.
            The process announces its carriers (retained) on
            supernet/carriers/host/<host>/carriers, takes batched submits for all of them
            on supernet/carriers/host/<host>/submit (and supernet/carrier/<id>/submit),
            publishes their delivery reports on supernet/carriers/host/<host>/dlr, and
            keeps a retained status per carrier (online/offline, last-will offline) on
            supernet/carrier/<id>/status; see router/contracts/interconnect.py. One process hosts
            many carriers; split a network
            over processes with --only or --shard. A report is published again
            (resent + 1) every --report-resend-s until a router acknowledges it on
            supernet/carriers/host/<host>/dlr-ack. If the broker goes away, every
            connection reconnects with backoff and publishes its retained state again.
            With --journal FILE the process's state (which ids each carrier accepted,
            reports not yet acknowledged) survives a SIGKILL: started again on the same
            file, it answers a repeat as a duplicate and publishes the reports no router
            acknowledged. SIGTERM or Ctrl-C stops cleanly: statuses go offline and the
            ledger (ground truth: submits, repeats, delivered, undelivered, reports
            sent, re-sent, acknowledged and lost, rejections) is written as JSON.
            """
        ),
        formatter_class=_FORMATTER,
        epilog=textwrap.dedent(
            """\
            examples:
              supernet carriers --network .supernet/network
              supernet carriers --network .supernet/network --only 'gb-*,agg-eu-*'
              supernet carriers --network .supernet/network --shard 0/2 --metrics-port 19101
              supernet carriers --network .supernet/network --scenario outage.toml
              supernet carriers --network .supernet/network --journal carriers.journal
            """
        ),
    )
    p.add_argument("--network", type=Path, required=True, help="generated network directory")
    p.add_argument(
        "--only",
        metavar="PATTERN",
        help="comma-separated globs over carrier ids, e.g. 'gb-*,agg-*' (default: all)",
    )
    p.add_argument("--shard", metavar="K/N", help="host only shard K of N (stable hash of the id)")
    p.add_argument(
        "--scenario",
        type=Path,
        help="fault scenario TOML (see carriers/scenarios/example.toml)",
    )
    p.add_argument("--mqtt-host", default=defaults.host, help=f"(default: {defaults.host})")
    p.add_argument(
        "--mqtt-port", type=int, default=defaults.mqtt_port, help=f"(default: {defaults.mqtt_port})"
    )
    p.add_argument(
        "--ledger",
        type=Path,
        help="where to write the JSON ledger on exit (default: NETWORK/ledger-<host id>.json)",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    p.add_argument(
        "--prometheus-targets",
        type=Path,
        metavar="DIR",
        help="with --metrics-port: drop a Prometheus file-discovery target in DIR "
        "(the local Prometheus reads .supernet/prometheus/targets)",
    )
    p.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help="append-only journal that lets a restarted process take over its state "
        "(see carriers/journal.py; default: none)",
    )
    p.add_argument(
        "--report-resend-s",
        type=positive(float),
        default=interconnect.REPORT_RESEND_S,
        metavar="S",
        help="publish a report again after S seconds without an acknowledgement "
        f"(default: {interconnect.REPORT_RESEND_S:g})",
    )
    p.add_argument(
        "--host-id",
        help="name of this process on the interconnect, and its MQTT identity (default: "
        "the one in --journal, if the journal has one, else 'carriers')",
    )
    p.add_argument(
        "--security",
        choices=["on", "off"],
        default="on" if defaults.security else "off",
        help="TLS and authentication with Mosquitto (default: on; SUPERNET_SECURITY)",
    )
    p.add_argument(
        "--secrets-dir",
        type=Path,
        default=defaults.secrets_dir,
        metavar="DIR",
        help="the credentials store and CA (default: <SUPERNET_STATE_DIR>/secrets)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_carriers)


def _carriers(args: argparse.Namespace) -> int:
    # The worker's set-up (UTC timestamps, JSON off a terminal), without its repeat
    # summaries: the carriers' warnings were always logged one by one.
    logs.configure("auto", args.log_level, repeat_interval_s=None)
    try:
        shard = network.parse_shard(args.shard) if args.shard else None
        scen = scenario.load(args.scenario) if args.scenario else None
        endpoints, ledger = network.load_endpoints(
            args.network, args.only, shard, now=time.monotonic()
        )
        journal = Journal.open(args.journal) if args.journal is not None else None
    except (
        network.SelectionError,
        scenario.ScenarioError,
        NetworkFileError,
        SimulationFileError,
        DeckError,
        JournalError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # A process restarted on its journal keeps its name: routers' acks and retained
    # directory entries then still refer to it.
    host_id = args.host_id or (journal.last_host if journal is not None else None) or "carriers"
    try:
        check_name(host_id)
        mqtt = Secrets(args.secrets_dir, args.security == "on").mqtt(
            args.mqtt_host, args.mqtt_port, host_id
        )
    except CredentialsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _serve(args, host_id, mqtt, endpoints, ledger, scen, journal)
    finally:
        if journal is not None:
            journal.close()


def _serve(
    args: argparse.Namespace,
    host_id: str,
    mqtt: MqttAccess,
    endpoints: dict[str, Endpoint],
    ledger: Ledger,
    scen: scenario.Scenario | None,
    journal: Journal | None,
) -> int:
    ledger_path: Path = args.ledger or args.network / f"ledger-{host_id}.json"
    # The decks and truth tables live as long as the process: keep the garbage collector
    # from walking them on every full collection, and collect young objects rarely enough
    # that results and reports die before (router.support.heap).
    heap.settle()
    server = None
    if args.metrics_port is not None:
        registry = CollectorRegistry()
        register_metrics(registry, ledger)
        server, _ = start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)
    target = None
    if server is not None and args.prometheus_targets is not None:
        target = write_target(
            args.prometheus_targets,
            f"carriers-{host_id}",
            "127.0.0.1",
            args.metrics_port,
            {"carriers": host_id},
        )
    if journal is not None:
        journal.opened(host_id)
        log.info("journal open", path=str(journal.path), host=host_id)
    host = CarrierHost(
        endpoints,
        ledger,
        mqtt=mqtt,
        host_id=host_id,
        scenario=scen,
        report_resend_s=args.report_resend_s,
        journal=journal,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await host.run(stop)

    try:
        uvloop.run(main())
    finally:
        ledger.write_json(ledger_path)
        log.info("ledger written", path=str(ledger_path), **_flat(ledger.totals()))
        if server is not None:
            server.shutdown()
        if target is not None:
            target.unlink(missing_ok=True)
    return 0


def _flat(totals: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in totals.items() if not isinstance(v, dict)}
