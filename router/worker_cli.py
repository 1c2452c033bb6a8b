"""`supernet worker` and `supernet fleet`."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from router import settings as settings_mod

EPILOG_SETTINGS = (
    "settings come from, in order of precedence: flags, SUPERNET_* environment variables,\n"
    "a TOML file (--config), defaults. Keys in the TOML file are the flag names with\n"
    "underscores, e.g. submit_timeout_s = 2.5."
)


def _settings(args: argparse.Namespace) -> settings_mod.WorkerSettings | None:
    from rich.console import Console

    try:
        return settings_mod.load(args)
    except settings_mod.SettingsError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}")
        return None


def run_worker(args: argparse.Namespace) -> int:
    import uvloop

    from router import logs
    from router.worker import main

    s = _settings(args)
    if s is None:
        return 2
    logs.configure(s.log_format, s.log_level)
    try:
        return uvloop.run(main(s))
    except settings_mod.SettingsError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/red] {e}")
        return 2
    except Exception:
        import structlog

        structlog.get_logger("router.worker").exception("worker failed")
        return 1


def run_fleet(args: argparse.Namespace) -> int:
    import uvloop

    from router import logs
    from router.fleet import Fleet

    s = _settings(args)
    if s is None:
        return 2
    if args.workers < 1:
        print("error: --workers must be at least 1")
        return 2
    logs.configure(s.log_format, s.log_level)
    # Each worker gets the fleet's explicit settings, its own name and its own metrics port.
    common: list[str] = []
    if args.config is not None:
        common += ["--config", str(args.config)]
    for f in dataclasses.fields(settings_mod.WorkerSettings):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in ("instance", "metrics_port"):
            common += [settings_mod.flag_name(f.name), str(value)]
    per_worker = [
        [*common, "--instance", f"{s.instance}-w{i}",
         "--metrics-port", str(s.metrics_port + i if s.metrics_port else 0)]
        for i in range(args.workers)
    ]  # fmt: skip
    fleet = Fleet(args.workers, per_worker, stop_grace_s=s.drain_timeout_s + 15)
    return uvloop.run(fleet.run())


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run one router worker (Kafka in, route, MQTT submit, receipts out)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run one router worker: consume send requests from Kafka as a member of the\n"
            "consumer group, route each one, submit it to its carrier over MQTT, and write\n"
            "receipts to Kafka. Offsets are committed only below the lowest request whose\n"
            "outcome is not yet durable. SIGTERM drains in-flight work and exits 0.\n\n"
            + EPILOG_SETTINGS
        ),
        epilog=(
            "examples:\n"
            "  supernet worker --network out/network\n"
            "  SUPERNET_BOOTSTRAP=127.0.0.1:29092 supernet worker --metrics-port 0\n"
            "  supernet worker --config worker.toml --instance w1"
        ),
    )
    settings_mod.add_arguments(worker)
    worker.set_defaults(func=run_worker)

    fleet = subparsers.add_parser(
        "fleet",
        help="run N workers as one consumer group, restarting any that crash",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run N router workers as child processes in one consumer group. A worker that\n"
            "exits on its own is restarted (with backoff); SIGTERM is passed on to every\n"
            "worker, and the fleet exits when they have drained. Worker i serves metrics on\n"
            "--metrics-port + i and is named <instance>-w<i>.\n\n" + EPILOG_SETTINGS
        ),
        epilog="examples:\n  supernet fleet --workers 2 --network out/network",
    )
    fleet.add_argument("--workers", type=int, default=2, metavar="N",
                       help="number of workers (default 2)")  # fmt: skip
    settings_mod.add_arguments(fleet)
    fleet.set_defaults(func=run_fleet)
