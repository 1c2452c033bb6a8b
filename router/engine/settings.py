"""Worker settings: one object, filled from defaults < TOML file < environment < flags.

Every field has a flag (``--submit-timeout-s``), an environment variable
(``SUPERNET_SUBMIT_TIMEOUT_S``) and a TOML key (``submit_timeout_s``). Values are
converted and checked by msgspec, so a wrong type names the setting and its source.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from router.support.credentials import KafkaAccess, Secrets


class SettingsError(Exception):
    """A setting is missing, malformed or out of range; the message names it and its source."""


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


def _instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    bootstrap: str = _help("Kafka bootstrap servers", default="127.0.0.1:19092")
    requests_topic: str = _help("topic of send requests", default="sms.requests")
    receipts_topic: str = _help("topic of receipts (status events)", default="sms.receipts")
    dead_letter_topic: str = _help("topic of undecodable requests", default="sms.dead-letter")
    attempts_topic: str = _help(
        "internal compacted topic, the write-ahead log of carrier attempts "
        "(empty: <requests_topic>.attempts)",
        default="",
    )
    group: str = _help("Kafka consumer group of the fleet", default="supernet-routers")
    group_instance_id: str = _help(
        "static group membership id (the fleet sets one per slot; empty: dynamic)", default=""
    )
    partitions: int = _help("partitions when the worker creates the topics", default=12)
    mqtt_host: str = _help("Mosquitto host (the carrier interconnect)", default="127.0.0.1")
    mqtt_port: int = _help("Mosquitto port", default=11883)
    security: Literal["on", "off"] = _help(
        "TLS, authentication and ACLs on both brokers (off: for brokers started with "
        "SUPERNET_SECURITY=off, a same-run baseline)",
        default="on",
    )
    secrets_dir: str = _help(
        "credentials store and CA (empty: <SUPERNET_STATE_DIR, else ./.supernet>/secrets)",
        default="",
    )
    mqtt_user: str = _help(
        "MQTT identity: also the client id and the name in reply topics (the fleet gives "
        "slot i <mqtt_user>-w<i>)",
        default="router",
    )
    kafka_user: str = _help("Kafka (SCRAM) user", default="fleet")
    dlr_group: str = _help("shared-subscription group for delivery reports", default="routers")
    network: str = _help("network directory (default: the shipped example)", default="")
    max_in_flight: int = _help("requests in flight before intake pauses", default=5_000)
    submit_timeout_s: float = _help("seconds to wait for a carrier's submit result", default=10.0)
    max_attempts: int = _help("carriers tried per message before it fails", default=3)
    hold_limit_s: float = _help(
        "seconds a message may wait while no carrier can take it, before it fails", default=30.0
    )
    dedupe_window_s: float = _help(
        "seconds a message id is remembered: a repeat gets the original outcome", default=300.0
    )
    dedupe_max_ids: int = _help("message ids remembered per worker, at most", default=200_000)
    report_horizon_s: float = _help(
        "seconds after its submit a delivery report is still taken (security on)", default=3600.0
    )
    report_memory: int = _help(
        "delivery reports remembered per worker, so that a repeat is not a second receipt",
        default=200_000,
    )
    commit_interval_s: float = _help("seconds between offset commits", default=0.2)
    drain_timeout_s: float = _help("seconds SIGTERM waits for in-flight work", default=20.0)
    metrics_host: str = _help("address of the /metrics endpoint", default="127.0.0.1")
    metrics_port: int = _help("port of /metrics, /healthz and /readyz (0: none)", default=19400)
    prometheus_targets: str = _help(
        "directory to drop a Prometheus file-discovery target in (optional)", default=""
    )
    instance: str = _help("this worker's name (MQTT reply topic, logs)", default_factory=_instance)
    log_format: Literal["auto", "json", "console"] = _help("log format", default="auto")
    log_level: Literal["debug", "info", "warning", "error"] = _help("log level", default="info")

    def attempts(self) -> str:
        """The attempts log's topic: one per requests topic, partitioned like it."""
        return self.attempts_topic or f"{self.requests_topic}.attempts"

    def secrets(self) -> Secrets:
        """The credentials store (``SUPERNET_MQTT_PASSWORD`` / ``_KAFKA_PASSWORD`` win)."""
        from router.support.infra_settings import InfraSettings

        where = Path(self.secrets_dir) if self.secrets_dir else InfraSettings.from_env().secrets_dir
        return Secrets(where, self.security == "on")

    def kafka(self) -> KafkaAccess:
        """How this worker reaches Kafka (``bootstrap`` as ``kafka_user``)."""
        return self.secrets().kafka(self.bootstrap, self.kafka_user)

    def network_dir(self) -> Path:
        if self.network:
            return Path(self.network)
        from router.core.network import example_network

        return example_network()

    def to_argv(self, names: Iterable[str] | None = None) -> list[str]:
        """The `supernet worker` flags that give these settings back (``load`` of them with
        no environment and no config file returns an equal object): the flags of the
        settings in ``names``, or (None) of every setting that differs from its default
        (``instance``'s default is this process's ``<host>-<pid>``, so it is written unless
        it is exactly that). A value that begins with '-' is written ``--flag=value``, so
        that it cannot pass for a flag."""
        known = {f.name for f in dataclasses.fields(self)}
        if names is None:
            defaults = WorkerSettings()
            chosen = [n for n in sorted(known) if getattr(self, n) != getattr(defaults, n)]
        else:
            chosen = list(names)
            unknown = [n for n in chosen if n not in known]
            if unknown:
                raise SettingsError(f"no such worker settings: {', '.join(unknown)}")
        argv: list[str] = []
        for name in chosen:
            text = str(getattr(self, name))  # str(float) round-trips, as repr does
            flag = flag_name(name)
            argv += [f"{flag}={text}"] if text.startswith("-") else [flag, text]
        return argv

    def check(self) -> None:
        positive = ("partitions", "max_in_flight", "submit_timeout_s", "max_attempts",
                    "commit_interval_s", "drain_timeout_s", "hold_limit_s", "dedupe_window_s",
                    "dedupe_max_ids", "report_horizon_s", "report_memory")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be > 0, not {getattr(self, name)}")
        longest = self.hold_limit_s + self.max_attempts * 2 * self.submit_timeout_s
        if self.dedupe_window_s < longest:
            raise SettingsError(
                f"dedupe_window_s must be at least {longest:g} s, not {self.dedupe_window_s:g}: "
                "the longest a message can be in flight (hold_limit_s + max_attempts x 2 "
                "asks x submit_timeout_s), or a worker taking over could miss an attempt"
            )
        for name in ("mqtt_port", "metrics_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise SettingsError(f"{name} {getattr(self, name)} is not a port number")


ENV_PREFIX = "SUPERNET_"


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, defaulting to None so that unset flags do not override."""
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file of settings [SUPERNET_CONFIG]"
    )
    defaults = WorkerSettings(instance="<host>-<pid>")
    for f in dataclasses.fields(WorkerSettings):
        default = getattr(defaults, f.name)
        parser.add_argument(
            flag_name(f.name),
            dest=f.name,
            default=None,
            metavar=f.name.split("_")[-1].upper() if not isinstance(default, bool) else None,
            help=f"{f.metadata['help']} (default {default!r}) [{env_name(f.name)}]",
        )


def load(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> WorkerSettings:
    """Defaults, then the TOML file, then the environment, then the flags."""
    env = os.environ if environ is None else environ
    names = [f.name for f in dataclasses.fields(WorkerSettings)]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    config = getattr(args, "config", None) or env.get(ENV_PREFIX + "CONFIG")
    if config:
        try:
            data = tomllib.loads(Path(config).read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {config} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"config file {config}: {e}") from None
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise SettingsError(f"config file {config}: unknown settings {', '.join(unknown)}")
        values.update(data)
        sources.update(dict.fromkeys(data, f"config file {config}"))
    for name in names:
        if env_name(name) in env:
            values[name] = env[env_name(name)]
            sources[name] = f"environment variable {env_name(name)}"
        if args is not None and getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
            sources[name] = f"flag {flag_name(name)}"
    try:
        settings = msgspec.convert(values, WorkerSettings, strict=False)
    except msgspec.ValidationError as e:
        # e.g. "Expected `int`, got `str` - at `$.mqtt_port`": name the source too.
        path = str(e).rsplit("$.", 1)[-1].rstrip("`")
        where = sources.get(path, "settings")
        raise SettingsError(f"{where}: {e}") from None
    try:
        settings.check()
    except SettingsError as e:
        raise SettingsError(f"{e} (from {sources.get(str(e).split()[0], 'defaults')})") from None
    return settings
