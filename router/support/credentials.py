"""Credentials for the brokers: where they are kept, how a process finds its own, and the
client options built from them.

``supernet infra up`` creates them on first start (``router.tools.infra.credentials``)
in ``<state dir>/secrets/`` (a 0700 directory; every file in it 0600):

- ``ca.crt`` / ``ca.key``: the project's certificate authority; both brokers' TLS
  listeners present a certificate it signed, and clients trust only it;
- ``credentials.toml``: one password per identity, ``[mqtt.<name>]`` (with its ``role``)
  and ``[kafka.<name>]``; and ``[fleet] report_key``, the routers' shared key for signing
  attempts (``router.engine.transports.tokens``).

Every MQTT connection is its own identity: Mosquitto replaces the client id by the
username (``use_username_as_clientid``), so no identity can take another's client id,
and the topics each identity may use are in its ACL. A process names the identity it
uses (``--mqtt-user``, ``--kafka-user``) and finds the password in the store; a password
in ``SUPERNET_MQTT_PASSWORD`` / ``SUPERNET_KAFKA_PASSWORD`` takes its place, for
deployments that inject secrets. With security off (``SUPERNET_SECURITY=off``, for a
same-run baseline) clients connect in plain text, without credentials.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IDENTITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""An identity's name is part of MQTT topics and the client id (and of a carrier process's
file names): letters, digits, '.', '_' and '-'."""

SECRETS_DIR_NAME = "secrets"
STORE_NAME = "credentials.toml"
CA_CERT_NAME = "ca.crt"
SCRAM_MECHANISM = "SCRAM-SHA-512"

Broker = Literal["mqtt", "kafka"]


class CredentialsError(Exception):
    """The credentials a process needs are missing or unreadable; says what to do."""


def check_name(name: str) -> None:
    """CredentialsError unless ``name`` is a valid identity name (``IDENTITY_NAME``)."""
    if not IDENTITY_NAME.fullmatch(name):
        raise CredentialsError(
            f"identity {name[:80]!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(it is part of MQTT topics and the client id)"
        )


def parse_security(value: str, where: str = "SUPERNET_SECURITY") -> bool:
    """``on`` (the default) or ``off``."""
    text = value.strip().lower()
    if text in ("", "on", "true", "1", "yes"):
        return True
    if text in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{where}={value!r}: give 'on' or 'off'")


@functools.cache
def tls_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts only the project CA and checks the broker's name (its
    certificate names 127.0.0.1, ::1 and localhost)."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as e:
        raise CredentialsError(
            f"cannot read the CA certificate {ca_file}: {e}; `supernet infra up` creates it"
        ) from None


@dataclass(frozen=True, slots=True)
class MqttAccess:
    """How one client reaches Mosquitto: address, identity, and the CA for TLS."""

    host: str
    port: int
    username: str = ""  # "" with security off
    password: str = field(default="", repr=False)
    ca_file: Path | None = None  # TLS when set

    @property
    def secure(self) -> bool:
        return bool(self.username)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client``: the identity is the client id."""
        kw: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self.username:
            kw.update(username=self.username, password=self.password, identifier=self.username)
        if self.ca_file is not None:
            kw["tls_context"] = tls_context(self.ca_file)
        return kw

    def describe(self) -> str:
        scheme = "mqtts" if self.ca_file is not None else "mqtt"
        who = f"{self.username}@" if self.username else ""
        return f"{scheme}://{who}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class KafkaAccess:
    """How one client reaches Kafka: bootstrap servers, SCRAM identity, CA for TLS."""

    bootstrap: str
    username: str = ""  # "" with security off
    password: str = field(default="", repr=False)
    ca_file: Path | None = None

    @property
    def secure(self) -> bool:
        return bool(self.username)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.username:
            kw.update(
                security_protocol="SASL_SSL" if self.ca_file is not None else "SASL_PLAINTEXT",
                sasl_mechanism=SCRAM_MECHANISM,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
            if self.ca_file is not None:
                kw["ssl_context"] = tls_context(self.ca_file)
        return kw

    def describe(self) -> str:
        who = f"{self.username}@" if self.username else ""
        return f"kafka://{who}{self.bootstrap}"


@dataclass(frozen=True, slots=True)
class Secrets:
    """The credentials store of one state directory, and whether security is on."""

    dir: Path
    enabled: bool = True
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)

    @property
    def store(self) -> Path:
        return self.dir / STORE_NAME

    @property
    def ca_file(self) -> Path:
        return self.dir / CA_CERT_NAME

    def mqtt(self, host: str, port: int, user: str) -> MqttAccess:
        if not self.enabled:
            return MqttAccess(host, port)
        password = self.password("mqtt", user)
        return MqttAccess(host, port, user, password, self.ca_file)

    def kafka(self, bootstrap: str, user: str) -> KafkaAccess:
        if not self.enabled:
            return KafkaAccess(bootstrap)
        password = self.password("kafka", user)
        return KafkaAccess(bootstrap, user, password, self.ca_file)

    def report_key(self) -> bytes:
        """The fleet's key for signing attempts (``SUPERNET_REPORT_KEY``, base64, wins)."""
        text = self.environ.get("SUPERNET_REPORT_KEY") or (
            _read_store(self.store).get("fleet", {}).get("report_key")
        )
        if not isinstance(text, str) or not text:
            raise CredentialsError(
                f"no fleet report key in {self.store}: `supernet infra up` creates it"
            )
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise CredentialsError("the fleet report key is not base64") from None

    def password(self, broker: Broker, user: str) -> str:
        """``user``'s password: from ``SUPERNET_<BROKER>_PASSWORD`` if set, else the store."""
        injected = self.environ.get(f"SUPERNET_{broker.upper()}_PASSWORD")
        if injected:
            return injected
        entry = _read_store(self.store).get(broker, {}).get(user)
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            known = ", ".join(sorted(_read_store(self.store).get(broker, {}))) or "none"
            hint = (
                f"`supernet infra identity add ROLE {user}` provisions it"
                if broker == "mqtt"
                else "the Kafka users are fleet, producer, receipts and admin"
            )
            raise CredentialsError(
                f"no {broker} identity {user!r} in {self.store} (it has: {known}); {hint}"
            )
        password: str = entry["password"]
        return password


def _read_store(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CredentialsError(
            f"no credentials at {path}: `supernet infra up` creates them on first start "
            "(or point SUPERNET_STATE_DIR at the state directory that has them; "
            "SUPERNET_SECURITY=off talks to brokers that run without authentication)"
        ) from None
    except OSError as e:
        raise CredentialsError(f"cannot read the credentials {path}: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CredentialsError(f"credentials {path} are not valid TOML: {e}") from None
