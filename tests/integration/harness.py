"""Support for end-to-end tests: a small network, real processes, Kafka in and out, and
MQTT identities.

Processes run as the user would run them (`python -m router ...`), each with its own log
file (``router.support.procs.Child``); the tests wait on what they log, stop them by pid
and never leave one behind. Topics are read back with ``router.engine.kafka.Reader``.

Every MQTT connection is its own identity (Mosquitto makes the username the client id):
``identity`` provisions one on a broker of ``InfraSettings``, and ``carriers_args`` /
``worker_args`` provision the identities of the processes a test starts and give the
flags that name them.

Kafka: the tests' own clients (producing requests, reading topics back) are the
operator, ``admin`` (``kafka_admin``); the processes under test run as their real SCRAM
users (workers as ``fleet``, the load tool as ``producer`` / ``receipts``), who may use
only the topics granted to them: ``grant`` a test's pipeline before they start and
``revoke`` it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import phonenumbers

from router.contracts import network_file, wire
from router.engine import kafka
from router.support.credentials import KafkaAccess, MqttAccess
from router.support.infra_settings import InfraSettings
from router.support.procs import Child
from router.tools.infra import credentials, kafka_acls
from router.tools.infra.kafka_acls import Pipeline

# ---- MQTT identities ------------------------------------------------------------------------


def unique(stem: str) -> str:
    """A fresh identity name: ``<stem>-<8 hex>`` (one per connection of a test)."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def provision(infra: InfraSettings, role: str, names: Sequence[str]) -> None:
    """With security on, provision the MQTT identities ``names`` with ``role`` on the
    broker of ``infra`` (those that are new; a running Mosquitto reloads its files)."""
    if infra.security:
        credentials.provision(infra, role, names)


def identity(infra: InfraSettings, role: str, name: str) -> MqttAccess:
    """MQTT identity ``name`` with ``role`` on the broker of ``infra``, provisioned if
    new; the ``MqttAccess`` to connect with."""
    provision(infra, role, [name])
    return infra.secrets().mqtt(infra.host, infra.mqtt_port, name)


@contextlib.asynccontextmanager
async def mqtt_client(access: MqttAccess, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    """A client connected as ``access``, subscribed to ``topics`` (QoS 1)."""
    async with aiomqtt.Client(**access.client_kwargs()) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


def security_args(infra: InfraSettings) -> list[str]:
    """The flags that make a `supernet carriers`, `worker` or `fleet` use the security of
    the brokers of ``infra`` and its credentials store."""
    return ["--security", "on" if infra.security else "off",
            "--secrets-dir", str(infra.secrets_dir)]  # fmt: skip


def carriers_args(infra: InfraSettings, host_id: str) -> list[str]:
    """`supernet carriers` flags for the Mosquitto of ``infra`` as carrier process
    ``host_id`` (its MQTT identity, provisioned here with the role ``carriers``)."""
    provision(infra, "carriers", [host_id])
    return ["--mqtt-host", infra.host, "--mqtt-port", str(infra.mqtt_port),
            "--host-id", host_id, *security_args(infra)]  # fmt: skip


def worker_args(infra: InfraSettings, mqtt_user: str, fleet: int | None = None) -> list[str]:
    """`supernet worker` (or, with ``fleet`` workers, `supernet fleet`) flags for the
    Mosquitto of ``infra`` as ``mqtt_user`` (role ``router``; a fleet's slot i is
    ``<mqtt_user>-w<i>``), provisioned here."""
    names = [mqtt_user] if fleet is None else [f"{mqtt_user}-w{i}" for i in range(fleet)]
    provision(infra, "router", names)
    return ["--mqtt-host", infra.host, "--mqtt-port", str(infra.mqtt_port),
            "--mqtt-user", mqtt_user, *security_args(infra)]  # fmt: skip


# ---- Kafka users and grants ----------------------------------------------------------------


def kafka_admin(infra: InfraSettings) -> KafkaAccess:
    """The Kafka of ``infra`` as ``admin``, the operator: the tests' own clients."""
    return infra.kafka("admin")


def kafka_user(infra: InfraSettings, user: str) -> KafkaAccess:
    """The Kafka of ``infra`` as SCRAM user ``user`` (its password from the store)."""
    return infra.kafka(user)


async def grant(infra: InfraSettings, pipeline: Pipeline) -> None:
    """With security on, grant ``pipeline``'s ACLs (``kafka_acls.grant``) on the Kafka of
    ``infra``: its workers (``fleet``), producer and receipt readers may then use it."""
    if infra.security:
        await kafka_acls.grant(kafka_admin(infra), pipeline)


async def revoke(infra: InfraSettings, pipeline: Pipeline) -> None:
    """Take back what ``grant`` gave (so the test broker's ACL list does not grow)."""
    if infra.security:
        await kafka_acls.revoke(kafka_admin(infra), pipeline)


def mobile_numbers(network: Path, count: int, seed: int) -> list[str]:
    """Valid-length numbers under the direct carriers' real prefixes, spread over them."""
    rnd = random.Random(seed)
    spec = network_file.load(network)
    pool: list[tuple[str, int]] = []
    for c in spec.carriers:
        if c.kind != "direct":
            continue
        region = c.countries[0]
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is None:
            continue
        total = len(str(example.country_code)) + len(str(example.national_number))
        with (network / c.deck).open(newline="") as f:
            prefixes = [row[0] for row in list(csv.reader(f))[1:]]
        pool += [(p, total) for p in prefixes if len(p) < total]
    out = []
    for _ in range(count):
        prefix, total = rnd.choice(pool)
        out.append("+" + prefix + "".join(rnd.choices("0123456789", k=total - len(prefix))))
    return out


def requests(numbers: Sequence[str], tag: str) -> list[wire.SendRequest]:
    now = int(time.time() * 1000)
    classes: list[wire.MessageClass] = ["otp", "transactional", "marketing"]
    return [
        wire.SendRequest(
            id=f"{tag}-{i}",
            to=to,
            body=f"Your code is {i:06d}",
            account="AC-test",
            cls=classes[i % 3],
            created_at=now,
        )
        for i, to in enumerate(numbers)
    ]


@dataclass
class Proc:
    """A `supernet` command as a child process with its output in a log file."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: Child | None = None

    def start(self) -> Proc:
        self.proc = Child(
            self.name, [sys.executable, "-m", "router", *self.argv], self.log,
            {**os.environ, **self.env},
        )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_for(self, needle: str, timeout: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            if not self.running():
                raise AssertionError(f"{self.name} exited before {needle!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {needle!r} in {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.signal(sig)

    async def wait(self, timeout: float) -> int:
        """Its exit code; TimeoutError if it still runs after ``timeout`` seconds."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.exited(), timeout)

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not go. Returns the exit code."""
        if self.proc is None:
            return None
        if self.running():
            self.proc.signal(signal.SIGTERM)
            try:
                return await self.wait(timeout)
            except TimeoutError:
                self.proc.signal(signal.SIGKILL)
        return await self.wait(10)


async def produce(
    access: KafkaAccess, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    producer = kafka.producer(access)
    await producer.start()
    n = 0
    try:
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


def request_records(reqs: Iterable[wire.SendRequest]) -> list[tuple[bytes | None, bytes | None]]:
    return [(r.to.encode(), wire.ENCODER.encode(r)) for r in reqs]


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp: int


async def read_topic(
    access: KafkaAccess, topic: str, until: int | None = None, timeout: float = 60.0,
    idle: float = 2.0,
) -> list[Record]:  # fmt: skip
    """Every record of ``topic`` from the beginning: until ``until`` records were read,
    or (``until`` None) until no record came for ``idle`` seconds; at most ``timeout``."""
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    async with (
        kafka.Reader(access, topic, client_id="supernet-test-reader") as reader,
        contextlib.aclosing(reader.records(follow=True)) as batches,
    ):
        while until is None or len(out) < until:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = left if until is not None else min(left, idle)
            try:
                batch = await asyncio.wait_for(anext(batches), wait)
            except TimeoutError:
                break
            out += [Record(r.key, r.value, dict(r.headers), r.timestamp) for r in batch]
    return out


def receipts(records: Iterable[Record]) -> list[wire.Receipt]:
    return [wire.RECEIPT_DECODER.decode(r.value) for r in records if r.value is not None]


def outcomes(rs: Iterable[wire.Receipt]) -> dict[str, list[wire.Receipt]]:
    by_id: dict[str, list[wire.Receipt]] = {}
    for r in rs:
        if r.status in ("sent", "failed"):
            by_id.setdefault(r.id, []).append(r)
    return by_id


async def wait_for_outcomes(
    access: KafkaAccess, topic: str, ids: set[str], timeout: float, each: int = 1
) -> list[wire.Receipt]:
    """Read receipts until every id in ``ids`` has ``each`` outcomes (or the timeout)."""
    rs: list[wire.Receipt] = []
    missing = set(ids)
    if not missing:
        return rs
    seen: dict[str, int] = {}

    async def follow(reader: kafka.Reader) -> None:
        async for batch in reader.records(follow=True):
            for r in batch:
                if r.value is None:
                    continue
                receipt = wire.RECEIPT_DECODER.decode(r.value)
                rs.append(receipt)
                if receipt.status in ("sent", "failed"):
                    seen[receipt.id] = seen.get(receipt.id, 0) + 1
                    if seen[receipt.id] >= each:
                        missing.discard(receipt.id)
            if not missing:
                return

    async with kafka.Reader(access, topic, client_id="supernet-test-reader") as reader:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(reader), timeout)
    return rs


def ledger_totals(path: Path) -> dict[str, dict[str, int]]:
    data = json.loads(path.read_text())
    carriers: dict[str, dict[str, int]] = data["carriers"]
    return carriers
