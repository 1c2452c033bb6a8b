"""The ceiling for the end-to-end benchmark: consume requests, produce one receipt-sized
record per request, commit offsets below the lowest record not yet acknowledged. The same
Kafka clients, settings, receipt writer (router.engine.sink.KafkaSink) and offset bookkeeping
(router.engine.offsets.OffsetTracker) as the worker, but no routing and no carriers.

Run by benchmarks/e2e.py as one process per worker it stands in for:
    python benchmarks/passthrough.py BOOTSTRAP REQUESTS RECEIPTS GROUP \
        [--security on|off] [--secrets-dir DIR] [--kafka-user USER]
With security on (the default) it connects as the worker does: SASL_SSL as the Kafka user
``fleet`` (its password from the credentials store in DIR), on topics granted to it.
It exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
import time
from pathlib import Path

import uvloop

from router.contracts import wire
from router.engine import kafka
from router.engine.offsets import OffsetTracker
from router.engine.sink import KafkaSink
from router.support.credentials import KafkaAccess, Secrets, parse_security
from router.support.infra_settings import InfraSettings

MAX_IN_FLIGHT = 5000


async def main(access: KafkaAccess, requests: str, receipts: str, group: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    producer = kafka.producer(access)
    consumer = kafka.consumer(access, group, requests)
    await producer.start()
    await consumer.start()
    sink = KafkaSink(producer, receipts, f"{receipts}.dead-letter")
    tracker: OffsetTracker[kafka.TopicPartition] = OffsetTracker()

    async def committer() -> None:
        while True:
            await asyncio.sleep(0.2)
            offsets = tracker.to_commit()
            if offsets:
                with contextlib.suppress(kafka.CommitFailedError):
                    await consumer.commit(offsets)
                    tracker.committed(offsets)

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(sink.run()), tg.create_task(committer())]
            while not stop.is_set():
                room = MAX_IN_FLIGHT - tracker.in_flight
                if room <= 0:
                    await asyncio.sleep(0.001)
                    continue
                batches = await consumer.getmany(timeout_ms=100, max_records=min(room, 500))
                for tp, records in batches.items():
                    for r in records:
                        tracker.add(tp, r.offset)
                        try:
                            req = wire.decode_request(r.value or b"")
                        except ValueError:
                            tracker.done(tp, r.offset)
                            continue
                        receipt = wire.Receipt(
                            id=req.id, status="sent", ts=time.time_ns() // 1_000_000,
                            account=req.account, carrier="passthrough", route="direct",
                            attempt=1, segments=1, encoding="GSM-7", price=0.0,
                        )  # fmt: skip
                        sink.receipt(receipt, functools.partial(tracker.done, tp, r.offset))
            await sink.flush()
            for task in tasks:
                task.cancel()
    finally:
        await consumer.stop()
        await producer.stop()


def parse(argv: list[str]) -> tuple[KafkaAccess, str, str, str]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    for name in ("bootstrap", "requests", "receipts", "group"):
        p.add_argument(name)
    p.add_argument("--security", default="on", choices=("on", "off"))
    p.add_argument("--secrets-dir", type=Path, help="default: <SUPERNET_STATE_DIR>/secrets")
    p.add_argument("--kafka-user", default="fleet")
    a = p.parse_args(argv)
    where = a.secrets_dir or InfraSettings.from_env().secrets_dir
    access = Secrets(where, parse_security(a.security)).kafka(a.bootstrap, a.kafka_user)
    return access, a.requests, a.receipts, a.group


if __name__ == "__main__":
    uvloop.run(main(*parse(sys.argv[1:])))
