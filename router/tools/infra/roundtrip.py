"""A round trip through both brokers: proof that the local infrastructure carries messages.

Kafka: produce N JSON records to a fresh topic, read them back in a consumer group (as
the ``admin`` user, with security on).
MQTT: publish N messages at QoS 1 and receive them on a subscription (as the ``infra``
identity, an admin).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

import aiomqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from router.support.credentials import KafkaAccess, MqttAccess
from router.support.infra_settings import InfraSettings


@dataclass(frozen=True, slots=True)
class Trip:
    broker: str
    sent: int
    received: int
    seconds: float


async def kafka_round_trip(access: KafkaAccess, count: int, deadline_s: float = 60.0) -> Trip:
    topic = f"supernet.roundtrip.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(**access.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    started = time.perf_counter()
    producer = AIOKafkaProducer(**access.client_kwargs(), linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, json.dumps({"n": n}).encode(), key=str(n).encode())
            for n in range(count)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        **access.client_kwargs(),
        group_id=f"{topic}.reader",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: set[int] = set()
    try:
        async with asyncio.timeout(deadline_s):
            while len(seen) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    seen.update(json.loads(r.value)["n"] for r in records if r.value)
            await consumer.commit()
    finally:
        await consumer.stop()
    return Trip("kafka", count, len(seen), time.perf_counter() - started)


async def mqtt_round_trip(access: MqttAccess, count: int, deadline_s: float = 60.0) -> Trip:
    topic = f"supernet/roundtrip/{uuid.uuid4().hex[:12]}"
    seen: set[int] = set()
    started = time.perf_counter()
    client = aiomqtt.Client(**access.client_kwargs(), max_queued_outgoing_messages=count)
    async with client:
        await client.subscribe(topic, qos=1)

        async def receive() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.add(int(message.payload))
                if len(seen) == count:
                    return

        async with asyncio.timeout(deadline_s), asyncio.TaskGroup() as tg:
            tg.create_task(receive())
            for n in range(count):
                await client.publish(topic, str(n).encode(), qos=1)
    return Trip("mosquitto", count, len(seen), time.perf_counter() - started)


async def round_trips(settings: InfraSettings, count: int) -> list[Trip]:
    return [
        await kafka_round_trip(settings.kafka("admin"), count),
        await mqtt_round_trip(
            settings.secrets().mqtt(settings.host, settings.mqtt_port, "infra"), count
        ),
    ]
