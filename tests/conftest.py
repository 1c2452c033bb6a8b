"""Shared test set-up: every async test runs on uvloop, and integration tests find the
local brokers that `supernet infra up` started (addresses from the same settings)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping

import pytest
import uvloop

from router.support.credentials import MqttAccess
from router.support.infra_settings import InfraSettings


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
def new_topic(kafka_bootstrap: str) -> NewTopicFactory:
    """Create a fresh Kafka topic with the given partition count; returns its name."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create(partitions: int) -> str:
        topic = f"test.{uuid.uuid4().hex[:12]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            await admin.close()
        return topic

    return create
