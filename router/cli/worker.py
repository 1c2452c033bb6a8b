"""`supernet worker` and `supernet fleet`."""

from __future__ import annotations

import argparse
import dataclasses
import re
import socket
from typing import Any

from router.engine import settings as settings_mod
from router.support.infra_settings import host_in_url

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
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {e}")
        return None


def run_worker(args: argparse.Namespace) -> int:
    import uvloop

    from router.engine.worker import main
    from router.support import logs

    s = _settings(args)
    if s is None:
        return 2
    logs.configure(s.log_format, s.log_level)
    from router.core.errors import DeckError, NetworkError
    from router.support.credentials import CredentialsError

    try:
        return uvloop.run(main(s))
    except (settings_mod.SettingsError, CredentialsError, NetworkError, DeckError) as e:
        # What a restart cannot mend: one line, exit 2 (the fleet does not restart it).
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {e}")
        return 2
    except Exception:
        import structlog

        structlog.get_logger("router.engine.worker").exception("worker failed")
        return 1
    finally:
        logs.flush()  # the repeat counts still open


# Kafka's rule for a group.instance.id (JoinGroupRequest.validateGroupInstanceId).
GROUP_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def group_instance_ids(prefix: str, workers: int) -> list[str]:
    """Slot i's static group membership id: ``<prefix>-slot-<i>``, the same after a restart."""
    ids = [f"{prefix}-slot-{i}" for i in range(workers)]
    if not prefix or not all(GROUP_INSTANCE_ID.fullmatch(gid) for gid in ids):
        raise settings_mod.SettingsError(
            f"instance prefix {prefix!r} (--instance-prefix, default the host name) makes "
            f"group instance ids like {ids[-1]!r}, which Kafka refuses: give a prefix of "
            "letters, digits, '.', '_' and '-', short enough for ids of 249 characters"
        )
    return ids


def fleet_worker_args(args: argparse.Namespace, s: settings_mod.WorkerSettings) -> list[list[str]]:
    """Each slot's worker arguments: the fleet's explicit settings (given as flags; the
    environment and the config file reach the workers as they reach the fleet), the log
    format, its own name, metrics port and static group membership id. SettingsError if
    the user set one group instance id for several workers."""
    from router.support import logs

    ids = _slot_ids(s, args.workers, args.instance_prefix)
    # Workers write to pipes, not to a terminal: the fleet decides their log format.
    common = ["--log-format", logs.resolve_format(s.log_format)]
    if args.config is not None:
        common += ["--config", str(args.config)]
    own = ("instance", "metrics_port", "log_format", "mqtt_user")
    explicit = [
        f.name
        for f in dataclasses.fields(settings_mod.WorkerSettings)
        if getattr(args, f.name, None) is not None and f.name not in own
    ]
    common += s.to_argv(explicit)
    per_slot = []
    for i in range(args.workers):
        slot = dataclasses.replace(
            s,
            instance=f"{s.instance}-w{i}",
            mqtt_user=f"{s.mqtt_user}-w{i}",
            metrics_port=s.metrics_port + i if s.metrics_port else 0,
            group_instance_id=ids[i] if ids is not None else s.group_instance_id,
        )
        names = ["instance", "metrics_port", "mqtt_user",
                 *(["group_instance_id"] if ids is not None else [])]  # fmt: skip
        per_slot.append([*common, *slot.to_argv(names)])
    return per_slot


def _slot_ids(
    s: settings_mod.WorkerSettings, workers: int, instance_prefix: str | None
) -> list[str] | None:
    """The ids the fleet gives its slots, or None where the user set the one id (then it
    reaches the worker as the user gave it: flag, environment or config file)."""
    if not s.group_instance_id:
        prefix = instance_prefix if instance_prefix is not None else socket.gethostname()
        return group_instance_ids(prefix, workers)
    where = "--group-instance-id (or SUPERNET_GROUP_INSTANCE_ID, or the config file)"
    if workers > 1:
        raise settings_mod.SettingsError(
            f"{where} is {s.group_instance_id!r}, but {workers} workers cannot share one "
            "static member id (Kafka fences all but one). Leave it out: the fleet gives slot "
            "i the id <prefix>-slot-<i> (--instance-prefix, default the host name)"
        )
    if instance_prefix is not None:
        raise settings_mod.SettingsError(
            f"{where} and --instance-prefix both name the group instance id: give one"
        )
    return None


def run_fleet(args: argparse.Namespace) -> int:
    import uvloop
    from rich.console import Console

    from router.engine.fleet import Fleet
    from router.support import logs

    s = _settings(args)
    if s is None:
        return 2
    if args.workers < 1:
        Console(stderr=True, soft_wrap=True).print("[red]error:[/red] --workers must be at least 1")
        return 2
    from router.core.errors import DeckError, NetworkError
    from router.core.network import load_network

    try:
        per_slot = fleet_worker_args(args, s)
        # Every worker would fail the same way, restart after restart: check it once here.
        load_network(s.network_dir())
    except (settings_mod.SettingsError, NetworkError, DeckError) as e:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {e}")
        return 2
    # Every restart line matters here, and the backoff already spaces them: no summaries.
    logs.configure(s.log_format, s.log_level, repeat_interval_s=None)
    # Each worker's /healthz, on its own metrics port: the fleet kills one that stops
    # being alive (router.engine.probes); none without metrics ports.
    host = host_in_url(s.metrics_host)
    health = [f"http://{host}:{s.metrics_port + i}/healthz" if s.metrics_port else None
              for i in range(args.workers)]  # fmt: skip
    fleet = Fleet(args.workers, per_slot, stop_grace_s=s.drain_timeout_s + 15, health=health)
    try:
        return uvloop.run(fleet.run())
    finally:
        logs.flush()


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run one router worker (Kafka in, route, MQTT submit, receipts out)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run one router worker: consume send requests from Kafka as a member of the\n"
            "consumer group, route each one, submit it to its carrier over MQTT, and write\n"
            "receipts to Kafka. Offsets are committed only below the lowest request whose\n"
            "outcome is not yet durable. SIGTERM drains in-flight work and exits 0.\n"
            "SIGHUP reloads the network directory (changed prices, prefixes and dates) and\n"
            "swaps the route table under traffic; a reload that changes the carriers is\n"
            "refused.\n\n" + EPILOG_SETTINGS
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
            "worker, and the fleet exits when they have drained; SIGHUP is passed on too.\n"
            "Worker i serves metrics on --metrics-port + i, is named <instance>-w<i>, and is\n"
            "the static group member <prefix>-slot-<i>: restarted, it gets its partitions\n"
            "back without a rebalance. A worker that answered /healthz and then fails it 6\n"
            "times in a row (every 5 s: a stuck event loop) is killed and restarted.\n"
            "Workers' output lines come out whole on the fleet's stdout and stderr.\n\n"
            + EPILOG_SETTINGS
        ),
        epilog=(
            "examples:\n"
            "  supernet fleet --workers 2 --network out/network\n"
            "  supernet fleet --workers 4 --instance-prefix rack2-a   # a second fleet, one group"
        ),
    )
    fleet.add_argument("--workers", type=int, default=2, metavar="N",
                       help="number of workers (default 2)")  # fmt: skip
    fleet.add_argument(
        "--instance-prefix",
        metavar="P",
        help="slot i's group instance id is P-slot-i (default: the host name); fleets that "
        "share a group need different prefixes",
    )
    settings_mod.add_arguments(fleet)
    fleet.set_defaults(func=run_fleet)
