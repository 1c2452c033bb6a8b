"""Where the local brokers listen and keep their files.

Defaults sit off the well-known ports (9092, 1883, 9090) so that the project's brokers never
collide with a system service; each can be changed with an environment variable or a flag
of `supernet infra`. The state directory (configs, data, logs, pid files) defaults to
``.supernet`` in the current working directory, so an installed package needs no source
tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from router.support.credentials import SECRETS_DIR_NAME, KafkaAccess, Secrets, parse_security

STATE_DIR_NAME = ".supernet"
KAFKA_NODE_COUNTS = (1, 3)  # Kafka as one node, or as a three-node cluster


def host_in_url(host: str) -> str:
    """``::1`` must be written ``[::1]`` in listener addresses and URLs."""
    return f"[{host}]" if ":" in host else host


def _default_state_dir() -> Path:
    """``.supernet`` under the current working directory, made absolute when the settings
    are made (so a later ``chdir`` does not move it)."""
    return Path.cwd() / STATE_DIR_NAME


@dataclass(frozen=True, slots=True)
class InfraSettings:
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    mqtt_port: int = 11883
    prometheus_port: int = 19090
    kafka_heap: str = "512m"
    # KRaft nodes (broker and controller each) on loopback: 1 (the default), or 3 for a
    # cluster with replication factor 3 and min.insync.replicas 2. Node n (1-based) listens
    # on kafka_port + 2(n-1), its controller on kafka_controller_port + 2(n-1).
    kafka_nodes: int = 1
    state_dir: Path = field(default_factory=_default_state_dir)
    security: bool = True  # TLS, authentication and ACLs on both brokers

    ENV: ClassVar[dict[str, str]] = {
        "host": "SUPERNET_HOST",
        "kafka_port": "SUPERNET_KAFKA_PORT",
        "kafka_controller_port": "SUPERNET_KAFKA_CONTROLLER_PORT",
        "mqtt_port": "SUPERNET_MQTT_PORT",
        "prometheus_port": "SUPERNET_PROMETHEUS_PORT",
        "kafka_heap": "SUPERNET_KAFKA_HEAP",
        "kafka_nodes": "SUPERNET_KAFKA_NODES",
        "state_dir": "SUPERNET_STATE_DIR",
        "security": "SUPERNET_SECURITY",
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> InfraSettings:
        env = os.environ if environ is None else environ
        settings = cls()
        changes: dict[str, object] = {}
        for name, var in cls.ENV.items():
            value = env.get(var)
            if value is None or value == "":
                continue
            current = getattr(settings, name)
            if isinstance(current, bool):
                changes[name] = parse_security(value, var)
            elif isinstance(current, int):
                try:
                    changes[name] = int(value)
                except ValueError:
                    raise ValueError(f"{var}={value!r} is not a port number") from None
            elif isinstance(current, Path):
                changes[name] = Path(value).resolve()
            else:
                changes[name] = value
        out = replace(settings, **changes)  # type: ignore[arg-type]
        if out.kafka_nodes not in KAFKA_NODE_COUNTS:
            var = cls.ENV["kafka_nodes"]
            raise ValueError(f"{var}={out.kafka_nodes}: Kafka runs as 1 node or as 3")
        return out

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / SECRETS_DIR_NAME

    def secrets(self) -> Secrets:
        """The credentials store of this state directory (``security`` says if it is used)."""
        return Secrets(self.secrets_dir, self.security)

    def kafka_node_port(self, node: int) -> int:
        """The client port of Kafka node ``node`` (1-based)."""
        return self.kafka_port + 2 * (node - 1)

    def kafka_controller_node_port(self, node: int) -> int:
        return self.kafka_controller_port + 2 * (node - 1)

    @property
    def kafka_bootstrap(self) -> str:
        """Every node's client address, comma-separated (as Kafka clients take them)."""
        host = host_in_url(self.host)
        return ",".join(f"{host}:{self.kafka_node_port(n)}" for n in range(1, self.kafka_nodes + 1))

    def kafka(self, user: str) -> KafkaAccess:
        """How ``user`` reaches this Kafka (its password from the credentials store)."""
        return self.secrets().kafka(self.kafka_bootstrap, user)

    @property
    def mqtt_url(self) -> str:
        scheme = "mqtts" if self.security else "mqtt"
        return f"{scheme}://{host_in_url(self.host)}:{self.mqtt_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{host_in_url(self.host)}:{self.prometheus_port}"
