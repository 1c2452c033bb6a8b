"""The Kafka broker: one KRaft node (broker and controller in one process), or each node
of a three-node cluster on loopback (``InfraSettings.kafka_nodes``): its jars from Maven,
its config, its storage formatted with the cluster's id and SCRAM users, its TLS
listeners, and the default pipeline's topics once the last node answers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

from router.support.credentials import SCRAM_MECHANISM as SCRAM
from router.support.credentials import KafkaAccess
from router.support.infra_settings import InfraSettings, host_in_url
from router.support.procs import InfraError, port_open
from router.tools.infra import credentials
from router.tools.infra.broker import Broker

NODE_CERT = "kafka-node-1"  # the nodes' certificate subject (one for every node of the host)
SECURED_STAMP = ".supernet-scram"  # in the data directory: formatted with the SCRAM users
CLUSTER_STAMP = ".supernet-nodes"  # in the data directory: the node count formatted for


class Kafka(Broker):
    """Kafka node ``node`` of ``settings.kafka_nodes`` (KRaft: broker and controller in
    one process). Node 1 keeps the single node's name and directory (``kafka``); nodes 2
    and 3 of a cluster are ``kafka-2`` and ``kafka-3``."""

    name = "kafka"
    start_timeout = 120.0
    stop_timeout = 30.0

    def __init__(self, settings: InfraSettings, node: int = 1) -> None:
        self.node = node
        if node > 1:
            self.name = f"kafka-{node}"  # the instance's: its directory and pid file
        super().__init__(settings)

    @property
    def port(self) -> int:
        return self.settings.kafka_node_port(self.node)

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_node_port(self.node)

    @property
    def address(self) -> str:
        return f"{host_in_url(self.settings.host)}:{self.port} (controller :{self.controller_port})"

    @property
    def cluster(self) -> int:
        return self.settings.kafka_nodes

    @property
    def lib_dir(self) -> Path:
        """The jars: node 1's (every node of a cluster runs the same ones)."""
        return self.settings.state_dir / "kafka" / "lib"

    def resolve_classpath(self) -> None:
        """Copy the broker's jars from Maven (cached in ~/.m2) once per pom.xml version."""
        pom = Kafka(self.settings).copy("pom.xml")
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
        host, nodes = host_in_url(self.settings.host), range(1, self.cluster + 1)
        replicas = min(3, self.cluster)
        self.render(
            "server.properties",
            config,
            node_id=self.node,
            voters=",".join(
                f"{n}@{host}:{self.settings.kafka_controller_node_port(n)}" for n in nodes
            ),
            replicas=replicas,
            min_insync=2 if replicas >= 3 else 1,
            data_dir=data,
            listeners=self._listeners(store),
        )
        config.chmod(0o600)  # with security on, it holds the node's password
        stamp = data / SECURED_STAMP
        shape = data / CLUSTER_STAMP  # the node count the storage was formatted for
        if (data / "meta.properties").exists():
            formatted_for = shape.read_text().strip() if shape.exists() else "1"
            if formatted_for != str(self.cluster):
                # The quorum is written at format time: development data, start afresh.
                print(f"{self.name}: {data} was formatted for {formatted_for} node(s), not "
                      f"{self.cluster}; starting it afresh")  # fmt: skip
                shutil.rmtree(data)
            elif store is None or stamp.exists():
                return
            else:
                # SCRAM users are written when the storage is formatted: data from before
                # security was on cannot authenticate anyone. Development data: afresh.
                print(f"{self.name}: {data} was formatted without authentication; starting "
                      "it afresh")  # fmt: skip
                shutil.rmtree(data)
        cluster_id = self._cluster_id()
        if self.node == 1:
            # A new cluster id: the other nodes' storage (the old id's) is formatted anew.
            for n in range(2, self.cluster + 1):
                shutil.rmtree(Kafka(self.settings, n).dir / "data", ignore_errors=True)
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
        shape.write_text(f"{self.cluster}\n")

    def _cluster_id(self) -> str:
        """The cluster's id, the same for every node: node 1 makes a new one whenever it
        formats (and the other nodes' storage is then formatted anew); nodes 2 and 3 read
        it from the state directory (or make it, when node 1 has never formatted)."""
        shared = self.settings.state_dir / "kafka-cluster-id"
        if self.cluster > 1 and shared.exists() and self.node > 1:
            return shared.read_text().strip()
        # Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
        cluster_id = ""
        while not cluster_id or cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.write_text(cluster_id + "\n")
        return cluster_id

    def _listeners(self, store: credentials.Store | None) -> str:
        """The listener lines: plain text with security off; else SASL_SSL (SCRAM-SHA-512,
        and PLAIN over TLS for librdkafka before 2.6.1, i.e. Debian 12's kcat, whose SCRAM
        Kafka 4 refuses) for clients and the node's own traffic, and a controller
        listener that takes only CA-signed certificates (mutual TLS), with ACLs."""
        s, host = self.settings, host_in_url(self.settings.host)
        client = f"{host}:{self.port}"
        controller = f"{host}:{self.controller_port}"
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
                                                   subject=NODE_CERT)  # fmt: skip
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
        own = dataclasses.replace(
            self.admin(), bootstrap=f"{host_in_url(self.settings.host)}:{self.port}"
        )
        return asyncio.run(_kafka_answers(own, self.node))

    def after_ready(self) -> None:
        """Once the last node answers: create the default pipeline's topics (so a
        producer, who may not create any, can write at once) and, with security on, grant
        its ACLs. Idempotent."""
        if self.node == self.cluster:
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


async def _kafka_answers(admin: KafkaAccess, node: int) -> bool:
    """A metadata request to the node that lists it: the node serves clients."""
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(**admin.client_kwargs(), request_timeout_ms=3000)
    try:
        await client.start()
        cluster = await client.describe_cluster()
        return any(b.get("node_id") == node for b in cluster.get("brokers", []))
    except Exception:
        return False
    finally:
        await client.close()
