"""`supernet infra up|down|status`: the local Kafka, Mosquitto and Prometheus on loopback."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.support.credentials import CredentialsError, parse_security
from router.support.infra_settings import KAFKA_NODE_COUNTS, InfraSettings
from router.support.procs import InfraError
from router.tools.infra.brokers import BROKERS
from router.tools.infra.lifecycle import console, down, roundtrip, status, up


def _on_off(value: str) -> bool:
    try:
        return parse_security(value, "--security")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    if args.words and args.action != "identity":
        console.print(f"[red]error:[/red] `infra {args.action}` takes no {' '.join(args.words)!r}")
        return 2
    try:
        if args.action == "up":
            up(settings, names)
        elif args.action == "down":
            down(settings, names)
        elif args.action == "status":
            return 0 if status(settings, names) else 1
        elif args.action == "identity":
            return identity(settings, args.words)
        else:
            return roundtrip(settings, args.count)
    except (InfraError, CredentialsError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 1
    return 0


def identity(settings: InfraSettings, words: list[str]) -> int:
    """`identity list` or `identity add ROLE NAME...`."""
    from router.tools.infra import credentials

    if words[:1] == ["list"] and len(words) == 1:
        store = credentials.prepare(settings)
        for name, (role, _) in sorted(store.mqtt.items()):
            console.print(f"mqtt   {role:<9} {name}")
        for user in sorted(store.kafka):
            console.print(f"kafka  {'user':<9} {user}")
        console.print(f"[dim]passwords: {store.path} (0600)[/dim]")
        return 0
    if len(words) >= 3 and words[0] == "add":
        added = credentials.provision(settings, words[1], words[2:])
        known = sorted(set(words[2:]) - set(added))
        if added:
            console.print(f"added MQTT identities ({words[1]}): {', '.join(added)}")
        if known:
            console.print(f"already there: {', '.join(known)}")
        return 0
    console.print(
        "[red]error:[/red] give `identity list` or `identity add ROLE NAME...` "
        f"(roles: {', '.join(credentials.ROLES)})"
    )
    return 2


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
            "  roundtrip  send messages through Kafka and Mosquitto and count them back\n"
            "  identity list | identity add ROLE NAME...\n"
            "          the MQTT identities (each connection is one; roles admin, router,\n"
            "          carriers, observer) and Kafka users; `add` provisions more while\n"
            "          Mosquitto runs\n\n"
            "Security is on by default: both brokers listen with TLS (a project CA), every\n"
            "client authenticates and ACLs say what each identity may do. The first `up`\n"
            "creates the CA, certificates and passwords in <state dir>/secrets/ (0600).\n"
            "SUPERNET_SECURITY=off runs them open, for a same-run baseline only.\n\n"
            "Configs, logs, data and pid files live in the state directory: .supernet under the\n"
            "current working directory unless --state-dir or SUPERNET_STATE_DIR says otherwise.\n"
            "Every option also has an environment variable (shown in brackets), so that tests\n"
            "and tools agree on it."
        ),
        epilog=(
            "examples:\n"
            "  supernet infra up\n"
            "  supernet infra status\n"
            "  supernet infra identity add carriers carriers-eu\n"
            "  supernet infra up --only kafka --kafka-port 29092\n"
            "  supernet infra up --kafka-nodes 3\n"
            "  SUPERNET_STATE_DIR=/tmp/sn supernet infra down"
        ),
    )
    parser.add_argument("action", choices=["up", "down", "status", "roundtrip", "identity"])
    parser.add_argument("words", nargs="*", metavar="ARG", help="identity: list | add ROLE NAME...")
    parser.add_argument(
        "--count", type=int, default=1000, metavar="N",
        help="roundtrip: messages to send through each broker (default 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", choices=list(BROKERS), metavar="BROKER",
        help=f"act on this broker only (repeatable): {', '.join(BROKERS)}",
    )  # fmt: skip
    env = InfraSettings.ENV
    options: list[tuple[str, str, Callable[[str], object], object]] = [
        ("--host", "host", str, defaults.host),
        ("--kafka-port", "kafka_port", int, defaults.kafka_port),
        ("--kafka-controller-port", "kafka_controller_port", int, defaults.kafka_controller_port),
        ("--mqtt-port", "mqtt_port", int, defaults.mqtt_port),
        ("--prometheus-port", "prometheus_port", int, defaults.prometheus_port),
        ("--kafka-heap", "kafka_heap", str, defaults.kafka_heap),
        ("--state-dir", "state_dir", Path, ".supernet/ in the current directory"),
        ("--security", "security", _on_off, "on"),
    ]
    for flag, dest, kind, default in options:
        parser.add_argument(
            flag, dest=dest, type=kind, default=None,
            help=f"default {default} [{env[dest]}]",
        )  # fmt: skip
    parser.add_argument(
        "--kafka-nodes", dest="kafka_nodes", type=int, choices=KAFKA_NODE_COUNTS, default=None,
        help="Kafka as 1 node, or as a 3-node KRaft cluster on loopback (replication factor "
        "3, min.insync.replicas 2; node n on --kafka-port + 2(n-1)); give it to down and "
        f"status too (default 1) [{env['kafka_nodes']}]",
    )  # fmt: skip
    parser.set_defaults(func=run)
