"""The brokers' credentials: created on first start, provisioned per identity.

``supernet infra up`` calls ``prepare`` before it starts the brokers. On the first start it
creates, in ``<state dir>/secrets/`` (0700; every file 0600):

- a project CA (``ca.crt``, ``ca.key``: EC P-256, ten years) and, signed by it, one
  certificate per broker for 127.0.0.1, ::1 and localhost (issued again when missing,
  signed by another CA, or within 30 days of its end);
- ``credentials.toml``: a random password for every MQTT identity and Kafka user, and the
  fleet's key for signing attempts (``report_key``, 32 random bytes).

MQTT identities have roles (``ROLES``); each connection is its own identity (Mosquitto
makes the username the client id), so ``DEFAULT_IDENTITIES`` provisions a few of each,
and ``provision`` adds more while Mosquitto runs: it rewrites the password file and the
ACL file and sends Mosquitto SIGHUP, which reloads both (connected clients stay). Passwords
are hashed with ``mosquitto_passwd -U`` (Mosquitto's own PBKDF2-SHA512 format) rather than
by hand.

The ACLs (``mosquitto_acl``) follow the interconnect's topics
(``router.contracts.interconnect``): a carrier process publishes only on its own host
topics and on routers' reply topics ending in its own id, and reads only its own submit
and acknowledgement topics; a router publishes submits and acknowledgements, reads its
own reply topics, the reports' shared group, directories and statuses; an observer reads
directories and statuses; an admin may do anything.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from router.contracts import interconnect
from router.support.credentials import (
    CA_CERT_NAME,
    STORE_NAME,
    CredentialsError,
    MqttAccess,
    check_name,
    tls_context,
)
from router.support.infra_settings import InfraSettings
from router.support.procs import InfraError, Managed, wait_for

ROLES: Final = ("admin", "router", "carriers", "observer")
DEFAULT_IDENTITIES: Final[dict[str, tuple[str, ...]]] = {
    "admin": ("admin", "infra"),
    # `supernet worker` is `router`; the fleet's slot i is `router-w<i>`.
    "router": ("router", *(f"router-w{i}" for i in range(16))),
    # a carrier process's identity is its host id: `carriers`, or carriers-1 ... -7
    "carriers": ("carriers", *(f"carriers-{i}" for i in range(1, 8))),
    "observer": ("observer",),
}
KAFKA_USERS: Final = ("admin", "fleet", "producer", "receipts", "kafka-node")
"""SCRAM users; ``kafka-node`` is the broker's own (inter-broker) identity, a super user."""
CA_KEY_NAME: Final = "ca.key"
SERVER_NAMES: Final = ("localhost",)
SERVER_IPS: Final = ("127.0.0.1", "::1")
CA_YEARS: Final = 10
SERVER_DAYS: Final = 825
RENEW_BEFORE: Final = datetime.timedelta(days=30)


# ---- files ----------------------------------------------------------------------------


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically (a reader never sees half)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- the CA and the brokers' certificates ---------------------------------------------


def _name(common_name: str, org: bool = True) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "supernet (local)"))
    return x509.Name(attributes)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


_CA_USAGE: Final = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip
_SERVER_USAGE: Final = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)


def ensure_ca(secrets_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The project CA, created if missing."""
    cert_path, key_path = secrets_dir / CA_CERT_NAME, secrets_dir / CA_KEY_NAME
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InfraError(f"{key_path} is not the EC key `supernet infra up` makes")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name("supernet local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _pem_key(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def ensure_server_cert(
    secrets_dir: Path, name: str, host: str, subject: str = ""
) -> tuple[Path, Path]:
    """``<name>.crt`` and ``<name>.key``: a certificate for 127.0.0.1, ::1, localhost (and
    ``host``), for serving and for the broker's own client connections; (re)issued when
    missing, signed by another CA, or near its end. ``subject``: a bare CN instead of
    ``supernet <name>`` (a Kafka node's name is its principal)."""
    ca_cert, ca_key = ensure_ca(secrets_dir)
    cert_path, key_path = secrets_dir / f"{name}.crt", secrets_dir / f"{name}.key"
    now = datetime.datetime.now(datetime.UTC)
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.issuer == ca_cert.subject and cert.not_valid_after_utc - now > RENEW_BEFORE:
            try:
                cert.verify_directly_issued_by(ca_cert)
                return cert_path, key_path
            except (ValueError, TypeError, InvalidSignature):
                pass
    ips = {ipaddress.ip_address(ip) for ip in SERVER_IPS}
    dns = set(SERVER_NAMES)
    try:
        ips.add(ipaddress.ip_address(host))
    except ValueError:
        dns.add(host)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(dns)]
    sans += [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject, org=False) if subject else _name(f"supernet {name}"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_SERVER_USAGE, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key_path, _pem_key(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# ---- the store ------------------------------------------------------------------------


class Store:
    """``credentials.toml``: MQTT identities (role, password) and Kafka users (password)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mqtt: dict[str, tuple[str, str]] = {}  # name -> (role, password)
        self.kafka: dict[str, str] = {}  # user -> password
        self.report_key = ""  # base64: the fleet's key for signing attempts
        if path.exists():
            import tomllib

            data = tomllib.loads(path.read_text())
            for name, entry in data.get("mqtt", {}).items():
                self.mqtt[name] = (str(entry["role"]), str(entry["password"]))
            for name, entry in data.get("kafka", {}).items():
                self.kafka[name] = str(entry["password"])
            self.report_key = str(data.get("fleet", {}).get("report_key", ""))

    def add_mqtt(self, role: str, names: Iterable[str]) -> list[str]:
        """Provision ``names`` with ``role`` (those not there yet); the names added."""
        if role not in ROLES:
            raise CredentialsError(f"no MQTT role {role!r}; the roles are {', '.join(ROLES)}")
        added = []
        for name in names:
            check_name(name)
            known = self.mqtt.get(name)
            if known is not None:
                if known[0] != role:
                    raise CredentialsError(
                        f"MQTT identity {name!r} exists with role {known[0]!r}, not {role!r}"
                    )
                continue
            self.mqtt[name] = (role, secrets.token_urlsafe(24))
            added.append(name)
        return added

    def add_kafka(self, users: Iterable[str]) -> list[str]:
        added = []
        for user in users:
            check_name(user)
            if user not in self.kafka:
                # hex: Kafka's storage tool parses SCRAM credentials as [name=..,password=..]
                self.kafka[user] = secrets.token_hex(24)
                added.append(user)
        return added

    def save(self) -> None:
        lines = [
            "# supernet's broker credentials, made by `supernet infra`. Private: keep it 0600.",
            "",
        ]
        for name, (role, password) in sorted(self.mqtt.items()):
            lines += [f'[mqtt."{name}"]', f'role = "{role}"', f'password = "{password}"', ""]
        for user, password in sorted(self.kafka.items()):
            lines += [f'[kafka."{user}"]', f'password = "{password}"', ""]
        if self.report_key:
            lines += ["[fleet]", f'report_key = "{self.report_key}"', ""]
        write_private(self.path, "\n".join(lines).encode())


# ---- Mosquitto's files ----------------------------------------------------------------


def mosquitto_acl(identities: Mapping[str, tuple[str, str]]) -> str:
    """The ACL file: one section per identity, from its role."""
    ic = interconnect
    lines = ["# Made by `supernet infra` from credentials.toml: edits are overwritten.", ""]
    for name, (role, _) in sorted(identities.items()):
        lines.append(f"user {name}")
        if role == "admin":
            rules = [("readwrite", "#")]
        elif role == "router":
            rules = [
                ("write", ic.host_submit_topic("+")),
                ("write", ic.host_dlr_ack_topic("+")),
                ("read", ic.results_subscription(name)),
                ("read", ic.DLR_ALL),
                ("read", ic.DIRECTORY_ALL),
                ("read", ic.HOST_STATUS_ALL),
                ("read", ic.CARRIER_STATUS_ALL),
            ]
        elif role == "carriers":
            rules = [
                ("read", ic.host_submit_topic(name)),
                ("read", ic.host_dlr_ack_topic(name)),
                ("write", ic.directory_topic(name)),
                ("write", ic.host_status_topic(name)),
                ("write", ic.host_dlr_topic(name)),
                ("write", ic.carrier_status_topic(name, "+")),
                ("write", ic.result_topic(ic.reply_topic("_"), name).replace("/_/", "/+/")),
            ]
        else:  # observer
            rules = [
                ("read", ic.DIRECTORY_ALL),
                ("read", ic.HOST_STATUS_ALL),
                ("read", ic.CARRIER_STATUS_ALL),
            ]
        lines += [f"topic {access} {topic}" for access, topic in rules]
        lines.append("")
    return "\n".join(lines)


def write_mosquitto_files(store: Store, directory: Path) -> tuple[Path, Path]:
    """The password file (hashed by ``mosquitto_passwd -U``) and the ACL file."""
    passwd, acl = directory / "passwords", directory / "acl"
    plain = "".join(f"{name}:{password}\n" for name, (_, password) in sorted(store.mqtt.items()))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".passwords.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(plain)
        result = subprocess.run(
            ["mosquitto_passwd", "-U", tmp], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise InfraError(f"mosquitto_passwd -U failed: {result.stderr.strip()[:500]}")
        os.replace(tmp, passwd)
    finally:
        Path(tmp).unlink(missing_ok=True)
    write_private(acl, mosquitto_acl(store.mqtt).encode())
    return passwd, acl


# ---- what `infra up` and `infra identity add` call -------------------------------------


def prepare(settings: InfraSettings) -> Store:
    """Everything the brokers and their clients need, created where missing."""
    d = _private_dir(settings.secrets_dir)
    ensure_ca(d)
    store = Store(d / STORE_NAME)
    changed = False
    for role, names in DEFAULT_IDENTITIES.items():
        changed |= bool(store.add_mqtt(role, names))
    changed |= bool(store.add_kafka(KAFKA_USERS))
    if not store.report_key:
        store.report_key = base64.b64encode(secrets.token_bytes(32)).decode()
        changed = True
    if changed or not store.path.exists():
        store.save()
    return store


def provision(settings: InfraSettings, role: str, names: Iterable[str]) -> list[str]:
    """Add MQTT identities; a running Mosquitto of ``settings`` reloads its files (SIGHUP),
    and this returns once it accepts the first new one. Returns the names that were new."""
    store = prepare(settings)
    added = store.add_mqtt(role, names)
    if not added:
        return added
    store.save()
    mosquitto_dir = settings.state_dir / "mosquitto"
    if not (mosquitto_dir / "passwords").exists():
        return added  # not set up yet: `infra up` writes the files
    write_mosquitto_files(store, mosquitto_dir)
    pid = Managed("mosquitto", mosquitto_dir / "mosquitto.pid").pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        access = settings.secrets().mqtt(settings.host, settings.mqtt_port, added[0])
        if not wait_for(lambda: mqtt_accepts(access), timeout=10.0, interval=0.05):
            raise InfraError(f"mosquitto did not take the new identity {added[0]!r} in 10 s")
    return added


def mqtt_accepts(access: MqttAccess) -> bool:
    """True if Mosquitto accepts a connection with ``access`` (a blocking paho connect:
    short, and callable from code that is itself in an event loop)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    answer: list[int] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=access.username, clean_session=True)
    client.username_pw_set(access.username, access.password)
    if access.ca_file is not None:
        client.tls_set_context(tls_context(access.ca_file))
    client.on_connect = lambda c, u, flags, rc, props: answer.append(rc.value)
    try:
        client.connect(access.host, access.port, keepalive=5)
        deadline = time.monotonic() + 2.0
        while not answer and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        client.disconnect()
    except OSError:
        return False
    return answer == [0]
