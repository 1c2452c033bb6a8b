"""The `supernet` command line: one console script, one subcommand per module.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code). Adding a
command is one line in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "router.cli.infra",
    "carriers.cli",
    "router.cli.load",
    "router.cli.worker",
    "router.cli.explain",
    "router.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supernet",
        description=(
            "supernet: an open message routing engine. Send requests come in on Kafka, "
            "each is routed to the best carrier by price, speed and reliability, submitted "
            "over MQTT, and its receipts stream back out to Kafka."
        ),
        epilog="Run `supernet COMMAND --help` for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
