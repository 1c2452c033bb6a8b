"""`supernet infra up|down|status`: the local Kafka, Mosquitto and Prometheus on loopback."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from router.support.infra_settings import InfraSettings
from router.support.procs import InfraError
from router.tools.infra.brokers import BROKERS
from router.tools.infra.lifecycle import console, down, roundtrip, status, up


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
            "(assembled with Maven from the pom.xml in the package's templates,\n"
            "router/tools/infra/templates/), Mosquitto and Prometheus (Debian packages; run\n"
            "deploy/bootstrap.sh once to install them). Each broker's config is rendered from\n"
            "those templates into the state directory.\n\n"
            "  up      start what is not running and wait until each broker answers (idempotent)\n"
            "  down    stop what `up` started, by pid file; nothing else is touched\n"
            "  status  show what runs where; exit 0 only if all selected brokers answer\n"
            "  roundtrip  send messages through Kafka and Mosquitto and count them back\n\n"
            "Configs, logs, data and pid files live in the state directory: .supernet under the\n"
            "current working directory unless --state-dir or SUPERNET_STATE_DIR says otherwise.\n"
            "Every option also has an environment variable (shown in brackets), so that tests\n"
            "and tools agree on it."
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
        ("--state-dir", "state_dir", Path, ".supernet/ in the current directory"),
    ]
    for flag, dest, kind, default in options:
        parser.add_argument(
            flag, dest=dest, type=kind, default=None,
            help=f"default {default} [{env[dest]}]",
        )  # fmt: skip
    parser.set_defaults(func=run)
