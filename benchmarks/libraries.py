"""Where the chosen client libraries are the wall (issue 12, item 3): each library's fast
path against its plain one, and the wrapper against the library it wraps, in one run on
the benchmark's secured brokers (TLS, SCRAM, ACLs: as the engine runs).

- **Kafka, producing** receipt-sized records (``--record-bytes``) to a topic of 12
  partitions with the engine's producer settings (``router.engine.kafka.producer``):
  aiokafka's ``send()`` per record against ``create_batch``/``send_batch`` per partition
  and slice (what ``router.engine.sink`` does). CPU per record of this process (the
  client) and of the broker.
- **Kafka, consuming** those records back with the engine's consumer settings:
  ``getmany`` in slices, CPU per record of the client (aiokafka parses every record into
  a ``ConsumerRecord``).
- **MQTT, publishing** at QoS 1, payloads of ``--mqtt-bytes`` (a submit batch), with 64
  publishes in flight as ``CarrierLink`` keeps them: aiomqtt (over paho) against paho's
  own client driving its socket from its own thread (``loop_start``). CPU per publish of
  the client, and of Mosquitto.

    .venv/bin/python benchmarks/libraries.py            # about a minute
    .venv/bin/python benchmarks/libraries.py --records 200000 --publishes 40000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make `router` and `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt
import paho.mqtt.client as paho
import uvloop
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from benchmarks._harness import BENCH_INFRA, cpu_s, kafka_admin, provision
from router.contracts import interconnect
from router.engine import kafka
from router.support.credentials import MqttAccess, tls_context
from router.tools.infra import lifecycle as infra

PARTITIONS = 12
SLICE = 500  # records per slice, as a fetch hands the worker a slice
IN_FLIGHT = 64  # QoS 1 publishes in flight (router.engine.transports.mqtt.PUBLISHERS)
MQTT_USER = "bench-libraries"
console = Console(width=None if sys.stdout.isatty() else 160)

Row = dict[str, Any]


async def measure(
    name: str, count: int, broker_pid: int, run: Callable[[], Awaitable[None]]
) -> Row:
    """Run ``run`` and give CPU µs per item of this process and of the broker."""
    c0, b0, t0 = time.process_time(), cpu_s(broker_pid), time.monotonic()
    await run()
    c1, b1, t1 = time.process_time(), cpu_s(broker_pid), time.monotonic()
    return {
        "case": name,
        "items": count,
        "per_s": round(count / (t1 - t0)),
        "client_us": round((c1 - c0) * 1e6 / count, 1),
        "broker_us": round((b1 - b0) * 1e6 / count, 1),
    }


# -- Kafka ---------------------------------------------------------------------------------


async def kafka_cases(args: argparse.Namespace, pid: int) -> list[Row]:
    access = kafka_admin(BENCH_INFRA)
    topic = f"bench.libraries.{secrets.token_hex(3)}"
    await kafka.ensure_topics(access, [kafka.TopicSpec(topic, PARTITIONS)])
    value = b"x" * args.record_bytes
    keys = [f"m{i:025d}".encode() for i in range(args.records)]
    rows = []
    producer = kafka.producer(access, client_id="bench-libraries")
    await producer.start()
    try:
        await _warm(producer, topic, value)

        async def per_record() -> None:
            futures = []
            for at in range(0, len(keys), SLICE):
                for key in keys[at : at + SLICE]:
                    futures.append(await producer.send(topic, value, key=key))
                await asyncio.sleep(0)  # a slice at a time, as records come in
            await asyncio.gather(*futures)

        async def batched() -> None:
            futures = []
            for at in range(0, len(keys), SLICE):
                groups: dict[int, list[bytes]] = {}
                for key in keys[at : at + SLICE]:
                    groups.setdefault(zlib.crc32(key) % PARTITIONS, []).append(key)
                for p, group in groups.items():
                    batch = producer.create_batch()
                    for key in group:
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            futures.append(await producer.send_batch(batch, topic, partition=p))
                            batch = producer.create_batch()
                            batch.append(key=key, value=value, timestamp=None)
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                await asyncio.sleep(0)
            await asyncio.gather(*futures)

        small = keys[: args.requests]

        async def one_by_one() -> None:
            # A request per record, each awaited: how a worker writes at a low rate.
            for key in small:
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
                await (await producer.send_batch(batch, topic, partition=0))

        rows.append(await measure("one record per request (awaited)", len(small), pid, one_by_one))
        rows.append(await measure("aiokafka send() per record", len(keys), pid, per_record))
        rows.append(await measure("aiokafka send_batch per partition", len(keys), pid, batched))
    finally:
        await kafka.close_producer(producer)

    consumer = kafka.consumer(access, None)
    await consumer.start()
    try:
        tps = [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        total = 2 * len(keys) + args.requests + 200  # every case's records and the warm-up's

        async def consume() -> None:
            seen = 0
            deadline = time.monotonic() + 120
            while seen < total and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200, max_records=SLICE)
                seen += sum(len(rs) for rs in batches.values())

        rows.append(await measure("aiokafka getmany (consumer)", total, pid, consume))
    finally:
        await kafka.let_go(consumer.stop)
        await kafka.delete_topics(access, [topic])
    return rows


async def _warm(producer: kafka.AIOKafkaProducer, topic: str, value: bytes) -> None:
    """Metadata, connections and the broker's JIT before anything is timed."""
    futures = [await producer.send(topic, value, key=b"warm%d" % i) for i in range(200)]
    await asyncio.gather(*futures)


# -- MQTT ----------------------------------------------------------------------------------


def mqtt_access() -> MqttAccess:
    provision(BENCH_INFRA, "router", [MQTT_USER])  # routers publish to carriers' submits
    return BENCH_INFRA.secrets().mqtt(BENCH_INFRA.host, BENCH_INFRA.mqtt_port, MQTT_USER)


async def aiomqtt_case(access: MqttAccess, topic: str, payload: bytes, count: int) -> None:
    async with aiomqtt.Client(**access.client_kwargs(), max_inflight_messages=1000) as client:
        client.pending_calls_threshold = 2 * IN_FLIGHT
        left = count

        async def publisher() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await client.publish(topic, payload, qos=1)

        await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))


def paho_case(access: MqttAccess, topic: str, payload: bytes, count: int) -> None:
    """paho's own client: its network thread, IN_FLIGHT publishes outstanding at most."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=access.username)
    client.username_pw_set(access.username, access.password)
    if access.ca_file is not None:
        client.tls_set_context(tls_context(access.ca_file))
    client.max_inflight_messages_set(1000)
    slots = threading.Semaphore(IN_FLIGHT)
    done = threading.Event()
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        slots.release()
        if acked == count:
            done.set()

    client.on_publish = on_publish
    client.connect(access.host, access.port)
    client.loop_start()
    try:
        for _ in range(count):
            slots.acquire()
            client.publish(topic, payload, qos=1)
        if not done.wait(120):
            raise RuntimeError(f"paho: {acked} of {count} publishes acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()


async def mqtt_cases(args: argparse.Namespace, pid: int) -> list[Row]:
    access = mqtt_access()
    topic = interconnect.host_submit_topic("bench-nobody")  # no subscriber: PUBACK only
    payload = b"x" * args.mqtt_bytes
    n = args.publishes
    await aiomqtt_case(access, topic, payload, 200)  # connect, TLS session, warm
    loop = asyncio.get_running_loop()
    return [
        await measure("aiomqtt publish, QoS 1", n, pid,
                      lambda: aiomqtt_case(access, topic, payload, n)),
        await measure("paho's own client, QoS 1 (its thread)", n, pid,
                      lambda: loop.run_in_executor(None, paho_case, access, topic, payload, n)),
    ]  # fmt: skip


# -- the run -------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, list[Row]]:
    kafka_pid = infra.brokers(BENCH_INFRA, ["kafka"])[0].proc.pid()
    mqtt_pid = infra.brokers(BENCH_INFRA, ["mosquitto"])[0].proc.pid()
    if kafka_pid is None or mqtt_pid is None:
        raise RuntimeError("the benchmark's brokers are not running")
    return {"kafka": await kafka_cases(args, kafka_pid), "mqtt": await mqtt_cases(args, mqtt_pid)}


def show(results: dict[str, list[Row]], args: argparse.Namespace) -> None:
    for part, unit, size in (("kafka", "record", args.record_bytes),
                             ("mqtt", "publish", args.mqtt_bytes)):  # fmt: skip
        t = Table(title=f"{part}: {size}-byte {unit}s, security on")
        for column in ("case", f"{unit}s", f"{unit}s/s", "client CPU µs", "broker CPU µs"):
            t.add_column(column, justify="left" if column == "case" else "right")
        for r in results[part]:
            t.add_row(r["case"], f"{r['items']:,}", f"{r['per_s']:,}", f"{r['client_us']:.1f}",
                      f"{r['broker_us']:.1f}")  # fmt: skip
        console.print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="The client libraries' fast paths against their plain ones, on the "
        "benchmark's secured brokers (see the module's docstring)."
    )
    p.add_argument("--records", type=int, default=60_000, help="Kafka records per case")
    p.add_argument("--requests", type=int, default=2_000,
                   help="Kafka requests of one record each")  # fmt: skip
    p.add_argument("--record-bytes", type=int, default=300, help="a receipt's size")
    p.add_argument("--publishes", type=int, default=10_000, help="MQTT publishes per case")
    p.add_argument("--mqtt-bytes", type=int, default=8_000,
                   help="a publish's payload (a submit batch of about 50 items)")  # fmt: skip
    p.add_argument("--keep-infra", action="store_true", help="leave the brokers running")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    args.requests = min(args.requests, args.records)
    if min(args.records, args.requests, args.record_bytes, args.publishes, args.mqtt_bytes) < 1:
        p.error("counts and sizes must be at least 1")
    names = ["kafka", "mosquitto"]
    started = not infra.status(BENCH_INFRA, names)
    infra.up(BENCH_INFRA, names)
    try:
        results = uvloop.run(run(args))
    finally:
        if started and not args.keep_infra:
            infra.down(BENCH_INFRA, names)
    show(results, args)
    console.print(f"machine: {os.cpu_count()} cores; the brokers share them with this process.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
