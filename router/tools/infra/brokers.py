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

from router.support.credentials import SCRAM_MECHANISM as SCRAM
from router.support.credentials import KafkaAccess, MqttAccess
from router.support.infra_settings import InfraSettings, host_in_url
from router.support.procs import InfraError, Managed, port_open
from router.tools.infra import credentials

TEMPLATES: Traversable = resources.files("router.tools.infra") / "templates"
"""The brokers' config templates: ``<broker>/<file>``, with ``$name`` fields to fill in."""
RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "supernet.rules.yml"
"""supernet's Prometheus rules, in the checkout this package runs from (an editable install)."""
NODE_ID = 1  # the single node's id (server.properties node.id)
SECURED_STAMP = ".supernet-scram"  # in the data directory: formatted with the SCRAM users


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

    def after_ready(self) -> None:  # noqa: B027 - a hook, empty unless a broker needs it
        """What `up` does once the broker answers (idempotent): nothing, by default."""

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
        store = credentials.prepare(self.settings) if self.settings.security else None
        self.render(
            "server.properties",
            config,
            port=self.settings.kafka_port,
            controller_port=self.settings.kafka_controller_port,
            data_dir=data,
            listeners=self._listeners(store),
        )
        config.chmod(0o600)  # with security on, it holds the node's password
        stamp = data / SECURED_STAMP
        if (data / "meta.properties").exists():
            if store is None or stamp.exists():
                return
            # SCRAM users are written when the storage is formatted: data from before
            # security was on cannot authenticate anyone. Development data: start afresh.
            print(f"kafka: {data} was formatted without authentication; starting it afresh")
            shutil.rmtree(data)
        # Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
        cluster_id = ""
        while not cluster_id or cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        users = []
        if store is not None:
            for user, password in sorted(store.kafka.items()):
                users += ["--add-scram", f"{SCRAM}=[name={user},password={password}]"]
        result = subprocess.run(
            [*self.java(), "kafka.tools.StorageTool", "format", "-g",
             "-t", cluster_id, "-c", str(config), *users],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise InfraError(f"kafka: formatting storage failed:\n{result.stdout}{result.stderr}")
        if store is not None:
            stamp.write_text("SCRAM users written at format time\n")

    def _listeners(self, store: credentials.Store | None) -> str:
        """The listener lines: plain text with security off; else SASL_SSL (SCRAM-SHA-512,
        and PLAIN over TLS for librdkafka before 2.6.1, i.e. Debian 12's kcat, whose SCRAM
        Kafka 4 refuses) for clients and the node's own traffic, and a controller
        listener that takes only CA-signed certificates (mutual TLS), with ACLs."""
        s, host = self.settings, host_in_url(self.settings.host)
        client = f"{host}:{s.kafka_port}"
        controller = f"{host}:{s.kafka_controller_port}"
        if store is None:
            return "\n".join([
                "# SUPERNET_SECURITY=off: plain text, no authentication (a baseline only)",
                f"listeners=PLAINTEXT://{client},CONTROLLER://{controller}",
                f"advertised.listeners=PLAINTEXT://{client}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ])  # fmt: skip
        keystore = self._keystore()
        plain_users = " ".join(
            f'user_{user}="{store.kafka[user]}"' for user in ("admin", "producer", "receipts")
        )
        node_password = store.kafka["kafka-node"]
        return "\n".join([
            "# Clients: SASL_SSL. The controller: mutual TLS, only the node's certificate.",
            f"listeners=CLIENT://{client},CONTROLLER://{controller}",
            f"advertised.listeners=CLIENT://{client}",
            "listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SSL",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=CLIENT",
            f"sasl.enabled.mechanisms={SCRAM},PLAIN",
            f"sasl.mechanism.inter.broker.protocol={SCRAM}",
            "listener.name.client.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="kafka-node" password="{node_password}";',
            "listener.name.client.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={s.secrets().ca_file}",
            "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
            "ssl.endpoint.identification.algorithm=https",
            "listener.name.controller.ssl.client.auth=required",
            "listener.name.client.ssl.client.auth=none",
            # the node's certificate CN=kafka-node-<n> is the principal User:kafka-node
            "ssl.principal.mapping.rules=RULE:^CN=(kafka-node)-[0-9]+$/$1/,DEFAULT",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=User:kafka-node;User:admin",
        ])  # fmt: skip

    def _keystore(self) -> Path:
        """The node's PEM keystore: its key (unencrypted PKCS#8: Kafka reads no other
        encryption that the ``cryptography`` package writes), its certificate, the CA."""
        d = self.settings.secrets_dir
        cert, key = credentials.ensure_server_cert(d, "kafka-node", self.settings.host,
                                                   subject=f"kafka-node-{NODE_ID}")  # fmt: skip
        keystore = d / "kafka-node.pem"
        data = key.read_bytes() + cert.read_bytes() + self.settings.secrets().ca_file.read_bytes()
        if not keystore.exists() or keystore.read_bytes() != data:
            credentials.write_private(keystore, data)
        return keystore

    def argv(self) -> list[str]:
        return [*self.java(), "kafka.Kafka", str(self.dir / "server.properties")]

    def admin(self) -> KafkaAccess:
        return self.settings.kafka("admin")

    def ready(self) -> bool:
        if not port_open(self.settings.host, self.port):
            return False
        return asyncio.run(_kafka_answers(self.admin()))

    def after_ready(self) -> None:
        """Create the default pipeline's topics (so a producer, who may not create any,
        can write at once) and, with security on, grant its ACLs. Idempotent."""
        asyncio.run(_default_pipeline(self.admin(), self.settings.security))


async def _default_pipeline(admin: KafkaAccess, security: bool) -> None:
    from router.engine import kafka
    from router.engine.settings import WorkerSettings
    from router.tools.infra import kafka_acls

    w = WorkerSettings(instance="infra")
    await kafka.ensure_pipeline(admin, w.requests_topic, w.receipts_topic,
                                w.dead_letter_topic, w.attempts(), w.partitions)  # fmt: skip
    if security:
        pipeline = kafka_acls.Pipeline(w.requests_topic, w.receipts_topic, w.dead_letter_topic,
                                       w.attempts(), w.group)  # fmt: skip
        await kafka_acls.grant(admin, pipeline)


async def _kafka_answers(admin: KafkaAccess) -> bool:
    """A metadata request that lists the broker: the broker serves clients."""
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(**admin.client_kwargs(), request_timeout_ms=3000)
    try:
        await client.start()
        cluster = await client.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        await client.close()


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
