"""Mosquitto is real and usable from our stack: aiomqtt on uvloop, retained messages,
a last-will fired by a client process that dies, and a shared subscription."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import aiomqtt
import pytest

pytestmark = pytest.mark.integration


def topic(name: str) -> str:
    return f"test/{name}/{uuid.uuid4().hex[:12]}"


async def test_retained_message_reaches_a_later_subscriber(mqtt_host: str, mqtt_port: int) -> None:
    t = topic("retained")
    async with aiomqtt.Client(mqtt_host, mqtt_port) as publisher:
        await publisher.publish(t, b"online", qos=1, retain=True)
    async with aiomqtt.Client(mqtt_host, mqtt_port) as late:
        await late.subscribe(t, qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(late.messages))
        assert message.payload == b"online"
        assert message.retain
        # Clear it: an empty retained payload deletes the retained message.
        await late.publish(t, b"", qos=1, retain=True)


WILL_CLIENT = """
import asyncio, sys
import aiomqtt
async def main(host, port, topic):
    will = aiomqtt.Will(topic, b"offline", qos=1, retain=True)
    async with aiomqtt.Client(host, int(port), will=will, keepalive=60) as client:
        await client.publish(topic, b"online", qos=1, retain=True)
        print("ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main(*sys.argv[1:]))
"""


async def test_last_will_fires_when_a_client_process_dies(mqtt_host: str, mqtt_port: int) -> None:
    t = topic("will")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, killed by pid below
        [sys.executable, "-c", WILL_CLIENT, mqtt_host, str(mqtt_port), t],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert ready.strip() == "ready"
        async with aiomqtt.Client(mqtt_host, mqtt_port) as watcher:
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


async def test_shared_subscription_splits_messages(mqtt_host: str, mqtt_port: int) -> None:
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
        aiomqtt.Client(mqtt_host, mqtt_port) as a,
        aiomqtt.Client(mqtt_host, mqtt_port) as b,
        aiomqtt.Client(mqtt_host, mqtt_port) as publisher,
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
