"""Mosquitto is real and usable from our stack: aiomqtt on uvloop over TLS, each client
its own identity (admins here, who may use any topic), retained messages, a last-will
fired by a client process that dies, and a shared subscription. What the identities may
not do is in test_mqtt_security."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import aiomqtt
import pytest

from router.support.infra_settings import InfraSettings
from tests.conftest import MqttIdentity
from tests.integration.harness import unique

pytestmark = pytest.mark.integration


def topic(name: str) -> str:
    return f"test/{name}/{uuid.uuid4().hex[:12]}"


def admin(mqtt_identity: MqttIdentity, stem: str) -> aiomqtt.Client:
    """A client of a fresh admin identity (not connected yet)."""
    return aiomqtt.Client(**mqtt_identity("admin", unique(stem)).client_kwargs())


async def test_retained_message_reaches_a_later_subscriber(mqtt_identity: MqttIdentity) -> None:
    t = topic("retained")
    async with admin(mqtt_identity, "test-publisher") as publisher:
        await publisher.publish(t, b"online", qos=1, retain=True)
    async with admin(mqtt_identity, "test-late") as late:
        await late.subscribe(t, qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(late.messages))
        assert message.payload == b"online"
        assert message.retain
        # Clear it: an empty retained payload deletes the retained message.
        await late.publish(t, b"", qos=1, retain=True)


WILL_CLIENT = """
import asyncio, sys
from pathlib import Path
import aiomqtt
from router.support.credentials import Secrets
async def main(host, port, secrets_dir, security, user, topic):
    access = Secrets(Path(secrets_dir), security == "on").mqtt(host, int(port), user)
    will = aiomqtt.Will(topic, b"offline", qos=1, retain=True)
    async with aiomqtt.Client(**access.client_kwargs(), will=will, keepalive=60) as client:
        await client.publish(topic, b"online", qos=1, retain=True)
        print("ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main(*sys.argv[1:]))
"""


async def test_last_will_fires_when_a_client_process_dies(
    infra: InfraSettings, mqtt_identity: MqttIdentity
) -> None:
    t = topic("will")
    user = mqtt_identity("admin", unique("test-will")).username  # the password stays in the store
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, killed by pid below
        [sys.executable, "-c", WILL_CLIENT, infra.host, str(infra.mqtt_port),
         str(infra.secrets_dir), "on" if infra.security else "off", user, t],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert ready.strip() == "ready"
        async with admin(mqtt_identity, "test-watcher") as watcher:
            await watcher.subscribe(t, qos=1)
            messages = aiter(watcher.messages)
            async with asyncio.timeout(10):
                assert (await anext(messages)).payload == b"online"
            os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: the broker must send the will
            async with asyncio.timeout(10):
                assert (await anext(messages)).payload == b"offline"
            await watcher.publish(t, b"", qos=1, retain=True)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_shared_subscription_splits_messages(mqtt_identity: MqttIdentity) -> None:
    t = topic("shared")
    share = f"$share/routers/{t}"
    count = 200
    got: dict[str, list[int]] = {"a": [], "b": []}
    done = asyncio.Event()

    async def subscriber(name: str, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got[name].append(int(message.payload))
            if len(got["a"]) + len(got["b"]) >= count:
                done.set()

    async with (
        admin(mqtt_identity, "test-share-a") as a,
        admin(mqtt_identity, "test-share-b") as b,
        admin(mqtt_identity, "test-share-publisher") as publisher,
    ):
        await a.subscribe(share, qos=1)
        await b.subscribe(share, qos=1)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(subscriber("a", a)), tg.create_task(subscriber("b", b))]
            for n in range(count):
                await publisher.publish(t, str(n).encode(), qos=1)
            async with asyncio.timeout(20):
                await done.wait()
            await asyncio.sleep(0.3)  # a duplicate delivery would arrive now
            for task in tasks:
                task.cancel()

    assert got["a"], "both shared subscribers should get a share"
    assert got["b"], "both shared subscribers should get a share"
    assert sorted(got["a"] + got["b"]) == list(range(count)), "each message exactly once"
