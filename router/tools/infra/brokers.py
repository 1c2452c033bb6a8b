"""The three local brokers: how each is installed, configured, started and probed
(Kafka in ``kafka_node``, the base in ``broker``).

Each broker renders its config from a template shipped in this package
(``router/tools/infra/templates/<broker>/``, read with ``importlib.resources``, so an
installed wheel finds them too) into the state directory, starts as a plain process on
loopback, and counts as up only when it answers a real request (a Kafka metadata request,
an MQTT round trip, Prometheus's readiness endpoint).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import resource
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from router.support.credentials import MqttAccess
from router.support.infra_settings import host_in_url
from router.support.procs import port_open
from router.tools.infra import credentials
from router.tools.infra.broker import TEMPLATES, Broker
from router.tools.infra.kafka_node import Kafka

__all__ = ["BROKERS", "RULES", "TEMPLATES", "Broker", "Kafka", "Mosquitto", "Prometheus"]

RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "supernet.rules.yml"
"""supernet's Prometheus rules, in the checkout this package runs from (an editable install)."""


class Mosquitto(Broker):
    name = "mosquitto"

    @property
    def port(self) -> int:
        return self.settings.mqtt_port

    @property
    def address(self) -> str:
        return self.settings.mqtt_url

    def prepare(self) -> None:
        self.require("mosquitto")
        self.require("mosquitto_passwd")
        # A carrier host keeps one connection per carrier (~1,600 for the generated
        # network): let the broker, which inherits our limits, open that many sockets.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.render(
            "mosquitto.conf",
            self.dir / "mosquitto.conf",
            port=self.port,
            log_file=self.dir / "logs" / "mosquitto.log",
            security=self._security_lines(),
            user=pwd.getpwuid(os.getuid()).pw_name,
        )
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)

    def _security_lines(self) -> str:
        s = self.settings
        if not s.security:
            return (
                "# SUPERNET_SECURITY=off: plain text, anyone may connect (a baseline only)\n"
                "allow_anonymous true"
            )
        store = credentials.prepare(s)
        cert, key = credentials.ensure_server_cert(s.secrets_dir, "mosquitto", s.host)
        passwd, acl = credentials.write_mosquitto_files(store, self.dir)
        return "\n".join([
            "# TLS with a certificate of the project CA; every client authenticates, and its",
            "# username becomes its client id, so no identity can take another's.",
            f"certfile {cert}",
            f"keyfile {key}",
            "tls_version tlsv1.2",
            "use_username_as_clientid true",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
        ])  # fmt: skip

    def argv(self) -> list[str]:
        return [self.require("mosquitto"), "-c", str(self.dir / "mosquitto.conf")]

    def ready(self) -> bool:
        if not port_open(self.settings.host, self.port):
            return False
        s = self.settings
        return asyncio.run(_mqtt_round_trip(s.secrets().mqtt(s.host, self.port, "infra")))


async def _mqtt_round_trip(access: MqttAccess) -> bool:
    """Subscribe, publish, receive: the broker routes messages."""
    import aiomqtt

    topic = f"supernet/infra/ready/{uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(3.0), aiomqtt.Client(**access.client_kwargs()) as client:
            await client.subscribe(topic, qos=1)
            await client.publish(topic, b"ready", qos=1)
            async for message in client.messages:
                return message.payload == b"ready"
    except (aiomqtt.MqttError, OSError, TimeoutError):
        return False
    return False


class Prometheus(Broker):
    name = "prometheus"

    @property
    def port(self) -> int:
        return self.settings.prometheus_port

    @property
    def address(self) -> str:
        return self.settings.prometheus_url

    @property
    def targets_dir(self) -> Path:
        """Where processes that serve /metrics drop their file-discovery target files."""
        return self.dir / "targets"

    def prepare(self) -> None:
        self.require("prometheus")
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        # The project's alert and recording rules (deploy/prometheus), copied beside the
        # config; a wheel without the checkout's deploy/ gets an empty rules file.
        rules = self.dir / "supernet.rules.yml"
        rules.write_text(RULES.read_text() if RULES.is_file() else "groups: []\n")
        self.render(
            "prometheus.yml",
            self.dir / "prometheus.yml",
            port=self.port,
            targets_dir=self.targets_dir,
            rules=rules,
        )

    def argv(self) -> list[str]:
        return [
            self.require("prometheus"),
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            # Loopback only; no --web.enable-lifecycle and no --web.enable-admin-api, so
            # no local client can stop it (POST /-/quit) or delete its data. It reads the
            # file-discovery targets as they change, so it never needs /-/reload.
            f"--web.listen-address={host_in_url(self.settings.host)}:{self.port}",
            "--storage.tsdb.retention.time=2d",
        ]

    def ready(self) -> bool:
        url = f"http://{host_in_url(self.settings.host)}:{self.port}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status: int = response.status
                return status == 200
        except (urllib.error.URLError, OSError):
            return False


BROKERS: dict[str, type[Broker]] = {
    "kafka": Kafka,
    "mosquitto": Mosquitto,
    "prometheus": Prometheus,
}
