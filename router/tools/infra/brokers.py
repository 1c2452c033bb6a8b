"""The three local brokers: how each is installed, configured, started and probed.

Each broker renders its config from a template shipped in this package
(``router/tools/infra/templates/<broker>/``, read with ``importlib.resources``, so an
installed wheel finds them too) into the state directory, starts as a plain process on
loopback, and counts as up only when it answers a real request (a Kafka metadata request,
an MQTT round trip, Prometheus's readiness endpoint).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pwd
import resource
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from router.support.credentials import MqttAccess
from router.support.infra_settings import InfraSettings, host_in_url
from router.support.procs import InfraError, Managed, port_open
from router.tools.infra import credentials

TEMPLATES: Traversable = resources.files("router.tools.infra") / "templates"
"""The brokers' config templates: ``<broker>/<file>``, with ``$name`` fields to fill in."""


class Broker(ABC):
    name: str
    start_timeout: float = 60.0
    stop_timeout: float = 20.0

    def __init__(self, settings: InfraSettings) -> None:
        self.settings = settings
        self.dir = settings.state_dir / self.name
        self.proc = Managed(self.name, self.dir / f"{self.name}.pid")
        self.log_file = self.dir / "logs" / f"{self.name}.out"

    @property
    @abstractmethod
    def port(self) -> int: ...

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach it, as shown by `status`."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line; called after ``prepare``."""

    @abstractmethod
    def prepare(self) -> None:
        """Install what is missing and write the config files."""

    @abstractmethod
    def ready(self) -> bool:
        """True once the broker answers a real request."""

    def render(self, template: str, target: Path, **fields: object) -> None:
        """Fill in the ``$name`` fields of ``TEMPLATES/<name>/<template>`` into ``target``."""
        text = Template((TEMPLATES / self.name / template).read_text()).substitute(
            host=self.settings.host, host_url=host_in_url(self.settings.host), **fields
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def copy(self, template: str) -> Path:
        """``TEMPLATES/<name>/<template>`` as it is, copied into the state directory (a
        file the broker's tools read by path)."""
        target = self.dir / template
        data = (TEMPLATES / self.name / template).read_bytes()
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
        return target

    def require(self, program: str) -> str:
        path = shutil.which(program)
        if path is None:
            raise InfraError(
                f"{self.name}: `{program}` is not installed; run deploy/bootstrap.sh "
                "(it installs the Debian packages the brokers need)"
            )
        return path


class Kafka(Broker):
    name = "kafka"
    start_timeout = 120.0
    stop_timeout = 30.0

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def address(self) -> str:
        return (
            f"{self.settings.kafka_bootstrap} (controller :{self.settings.kafka_controller_port})"
        )

    @property
    def lib_dir(self) -> Path:
        return self.dir / "lib"

    def resolve_classpath(self) -> None:
        """Copy the broker's jars from Maven (cached in ~/.m2) once per pom.xml version."""
        pom = self.copy("pom.xml")
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        stamp = self.lib_dir / ".pom-sha256"
        if stamp.exists() and stamp.read_text() == digest:
            return
        mvn = self.require("mvn")
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             f"-DoutputDirectory={self.lib_dir}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise InfraError(
                f"kafka: Maven could not resolve the broker from {pom}:\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )
        stamp.write_text(digest)

    def java(self) -> list[str]:
        return [
            self.require("java"),
            f"-Xms{self.settings.kafka_heap}",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.dir / 'logs'}",
            "-cp",
            f"{self.lib_dir}/*",
        ]

    def prepare(self) -> None:
        self.resolve_classpath()
        self.copy("log4j2.properties")
        data = self.dir / "data"
        config = self.dir / "server.properties"
        self.render(
            "server.properties",
            config,
            port=self.settings.kafka_port,
            controller_port=self.settings.kafka_controller_port,
            data_dir=data,
        )
        if (data / "meta.properties").exists():
            return
        # Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
        cluster_id = ""
        while not cluster_id or cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        result = subprocess.run(
            [*self.java(), "kafka.tools.StorageTool", "format", "-g",
             "-t", cluster_id, "-c", str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise InfraError(f"kafka: formatting storage failed:\n{result.stdout}{result.stderr}")

    def argv(self) -> list[str]:
        return [*self.java(), "kafka.Kafka", str(self.dir / "server.properties")]

    def ready(self) -> bool:
        if not port_open(self.settings.host, self.port):
            return False
        return asyncio.run(_kafka_answers(self.settings.kafka_bootstrap))


async def _kafka_answers(bootstrap: str) -> bool:
    """A metadata request that lists the broker: the broker serves clients."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        await admin.close()


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
        self.render(
            "prometheus.yml",
            self.dir / "prometheus.yml",
            port=self.port,
            targets_dir=self.targets_dir,
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
