"""Shared test set-up: every async test runs on uvloop, and integration tests find the
local brokers that `supernet infra up` started (addresses from the same settings).

With security on, every Kafka client is a SCRAM user of the credentials store: the tests'
own clients (the harness: producing requests, reading receipts, creating topics) are
``kafka_admin``; a process under test runs as its real user (``kafka_access``), on topics
a test grants it (``kafka_grants``) and revokes when it ends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import pytest
import uvloop

from router.support.credentials import KafkaAccess, MqttAccess
from router.support.infra_settings import InfraSettings

if TYPE_CHECKING:
    from router.tools.infra.kafka_acls import Pipeline


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run every async test on uvloop, the event loop supernet runs on in production."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def infra() -> InfraSettings:
    """Where the local brokers listen (defaults, or SUPERNET_* environment variables)."""
    return InfraSettings.from_env()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: InfraSettings) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def kafka_admin(infra: InfraSettings) -> KafkaAccess:
    """The test Kafka as ``admin`` (a super user; plain text without credentials with
    security off): the tests' own clients."""
    return infra.kafka("admin")


KafkaUser = Callable[[str], KafkaAccess]


@pytest.fixture(scope="session")
def kafka_access(infra: InfraSettings) -> KafkaUser:
    """``kafka_access(user)``: the test Kafka as SCRAM user ``user`` (``fleet``,
    ``producer``, ``receipts``, ``admin``), its password from the store."""

    def make(user: str) -> KafkaAccess:
        return infra.kafka(user)

    return make


Grant = Callable[["Pipeline"], Awaitable[None]]


@pytest.fixture
async def kafka_grants(infra: InfraSettings, kafka_admin: KafkaAccess) -> AsyncIterator[Grant]:
    """``await kafka_grants(pipeline)``: grant a pipeline's ACLs (``kafka_acls.grant``) for
    this test; each is revoked when the test ends. Nothing to do with security off."""
    from router.tools.infra import kafka_acls

    granted: list[Pipeline] = []

    async def grant(pipeline: Pipeline) -> None:
        if infra.security:
            await kafka_acls.grant(kafka_admin, pipeline)
            granted.append(pipeline)

    try:
        yield grant
    finally:
        for pipeline in reversed(granted):
            await kafka_acls.revoke(kafka_admin, pipeline)


@pytest.fixture(scope="session")
def mqtt_host(infra: InfraSettings) -> str:
    return infra.host


@pytest.fixture(scope="session")
def mqtt_port(infra: InfraSettings) -> int:
    return infra.mqtt_port


MqttIdentity = Callable[[str, str], MqttAccess]


@pytest.fixture(scope="session")
def mqtt_identity(infra: InfraSettings) -> MqttIdentity:
    """``mqtt_identity(role, name)``: an MQTT identity of the test broker, provisioned
    (with security on) if new, as the ``MqttAccess`` to connect with. Every connection
    needs its own name: Mosquitto makes the username the client id."""
    from router.tools.infra import credentials

    def make(role: str, name: str) -> MqttAccess:
        if infra.security:
            credentials.provision(infra, role, [name])
        return infra.secrets().mqtt(infra.host, infra.mqtt_port, name)

    return make


NewTopicFactory = Callable[[int], Awaitable[str]]


@pytest.fixture
def new_topic(kafka_admin: KafkaAccess) -> NewTopicFactory:
    """Create a fresh Kafka topic (as ``admin``) with the given partition count; returns
    its name. Only ``admin`` may use it until a test grants it to another user."""
    from aiokafka.admin import NewTopic

    from router.engine import kafka

    async def create(partitions: int) -> str:
        topic = f"test.{uuid.uuid4().hex[:12]}"
        admin = kafka.admin_client(kafka_admin)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            await admin.close()
        return topic

    return create
