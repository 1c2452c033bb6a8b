"""`supernet infra up|down|status`: the local Kafka, Mosquitto and Prometheus on loopback."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from router.infra.brokers import BROKERS, Broker, Kafka
from router.infra.procs import InfraError, port_open, wait_for
from router.infra.settings import InfraSettings

console = Console(stderr=True, highlight=False)


def brokers(settings: InfraSettings, names: Iterable[str]) -> list[Broker]:
    return [BROKERS[name](settings) for name in names]


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def up(settings: InfraSettings, names: Iterable[str]) -> None:
    """Start what is not running, then wait until every broker answers. Idempotent."""
    selected = brokers(settings, names)
    starting: list[Broker] = []
    for broker in selected:
        if broker.proc.pid() is not None:
            console.print(f"{broker.name}: already running (pid {broker.proc.pid()})")
            continue
        ports = [broker.port]
        if isinstance(broker, Kafka):
            ports.append(settings.kafka_controller_port)
        for port in ports:
            if port_open(settings.host, port):
                raise InfraError(
                    f"{broker.name}: {settings.host}:{port} is already in use by a process that "
                    "supernet did not start; stop it or choose another port "
                    f"(see `supernet infra up --help`)"
                )
        console.print(f"{broker.name}: preparing in {broker.dir}")
        broker.prepare()
        pid = broker.proc.start(broker.argv(), broker.log_file)
        console.print(f"{broker.name}: started (pid {pid})")
        starting.append(broker)
    for broker in selected:

        def answered(b: Broker = broker) -> bool:
            return b.proc.pid() is None or b.ready()

        if not wait_for(answered, broker.start_timeout, interval=0.25):
            broker.proc.stop(broker.stop_timeout)
            raise InfraError(
                f"{broker.name}: did not answer within {broker.start_timeout:.0f}s; "
                f"log {broker.log_file}:\n{_log_tail(broker.log_file)}"
            )
        if broker.proc.pid() is None:
            raise InfraError(
                f"{broker.name}: exited during start-up; log {broker.log_file}:\n"
                f"{_log_tail(broker.log_file)}"
            )
        console.print(f"{broker.name}: ready at {broker.address}")


def down(settings: InfraSettings, names: Iterable[str]) -> None:
    """Stop what `up` started (by pid file), in reverse order; nothing else."""
    for broker in reversed(brokers(settings, names)):
        pid = broker.proc.pid()
        if broker.proc.stop(broker.stop_timeout):
            console.print(f"{broker.name}: stopped (pid {pid})")
        else:
            console.print(f"{broker.name}: not running")


def status(settings: InfraSettings, names: Iterable[str]) -> bool:
    """Print what runs where; True if every selected broker runs and answers."""
    table = Table(title=f"supernet infrastructure ({settings.state_dir})")
    for column in ("broker", "state", "pid", "address", "log"):
        table.add_column(column)
    all_up = True
    for broker in brokers(settings, names):
        pid = broker.proc.pid()
        if pid is None:
            state = (
                "port taken by another process"
                if port_open(settings.host, broker.port)
                else "stopped"
            )
            all_up = False
        elif broker.ready():
            state = "[green]running[/green]"
        else:
            state = "[yellow]starting or not answering[/yellow]"
            all_up = False
        table.add_row(broker.name, state, str(pid or "-"), broker.address, str(broker.log_file))
    Console(highlight=False).print(table)
    return all_up


def roundtrip(settings: InfraSettings, count: int) -> int:
    """Send ``count`` messages through Kafka and through Mosquitto; print what came back."""
    import uvloop

    from router.infra.roundtrip import round_trips

    table = Table(title=f"round trip of {count} messages through each broker")
    for column in ("broker", "sent", "received", "seconds", "messages/s"):
        table.add_column(column, justify="right")
    trips = uvloop.run(round_trips(settings, count))
    for trip in trips:
        rate = trip.received / trip.seconds if trip.seconds else 0.0
        table.add_row(
            trip.broker, str(trip.sent), str(trip.received), f"{trip.seconds:.2f}", f"{rate:,.0f}"
        )
    Console(highlight=False).print(table)
    return 0 if all(t.received == t.sent for t in trips) else 1


def _settings(args: argparse.Namespace) -> InfraSettings:
    settings = InfraSettings.from_env()
    changes: dict[str, Any] = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(settings)
        if getattr(args, field.name, None) is not None
    }
    return dataclasses.replace(settings, **changes)


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    names = args.only or list(BROKERS)
    try:
        if args.action == "up":
            up(settings, names)
        elif args.action == "down":
            down(settings, names)
        elif args.action == "status":
            return 0 if status(settings, names) else 1
        else:
            return roundtrip(settings, args.count)
    except InfraError as e:
        console.print(f"[red]error:[/red] {e}")
        return 1
    return 0


def register(subparsers: Any) -> None:
    defaults = InfraSettings()
    parser = subparsers.add_parser(
        "infra",
        help="start, stop or show the local Kafka, Mosquitto and Prometheus",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run supernet's brokers as plain processes on loopback: Apache Kafka in KRaft mode\n"
            "(assembled with Maven from deploy/kafka/pom.xml), Mosquitto and Prometheus (Debian\n"
            "packages; run deploy/bootstrap.sh once to install them).\n\n"
            "  up      start what is not running and wait until each broker answers (idempotent)\n"
            "  down    stop what `up` started, by pid file; nothing else is touched\n"
            "  status  show what runs where; exit 0 only if all selected brokers answer\n"
            "  roundtrip  send messages through Kafka and Mosquitto and count them back\n\n"
            "Logs, data and pid files live in the state directory. Every option also has an\n"
            "environment variable (shown in brackets), so that tests and tools agree on it."
        ),
        epilog=(
            "examples:\n"
            "  supernet infra up\n"
            "  supernet infra status\n"
            "  supernet infra up --only kafka --kafka-port 29092\n"
            "  SUPERNET_STATE_DIR=/tmp/sn supernet infra down"
        ),
    )
    parser.add_argument("action", choices=["up", "down", "status", "roundtrip"])
    parser.add_argument(
        "--count", type=int, default=1000, metavar="N",
        help="roundtrip: messages to send through each broker (default 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", choices=list(BROKERS), metavar="BROKER",
        help=f"act on this broker only (repeatable): {', '.join(BROKERS)}",
    )  # fmt: skip
    env = InfraSettings.ENV
    options: list[tuple[str, str, type, object]] = [
        ("--host", "host", str, defaults.host),
        ("--kafka-port", "kafka_port", int, defaults.kafka_port),
        ("--kafka-controller-port", "kafka_controller_port", int, defaults.kafka_controller_port),
        ("--mqtt-port", "mqtt_port", int, defaults.mqtt_port),
        ("--prometheus-port", "prometheus_port", int, defaults.prometheus_port),
        ("--kafka-heap", "kafka_heap", str, defaults.kafka_heap),
        ("--state-dir", "state_dir", Path, ".supernet/ in the project"),
    ]
    for flag, dest, kind, default in options:
        parser.add_argument(
            flag, dest=dest, type=kind, default=None,
            help=f"default {default} [{env[dest]}]",
        )  # fmt: skip
    parser.set_defaults(func=run)
