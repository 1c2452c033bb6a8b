"""The ceiling for the end-to-end benchmark: consume requests, produce one receipt-sized
record per request, commit, with the same Kafka clients and settings as the worker but no
routing and no carriers.

Run by benchmarks/e2e.py as one process per worker it stands in for:
    python benchmarks/passthrough.py BOOTSTRAP REQUESTS RECEIPTS GROUP
It exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import uvloop

from router import kafka, wire


async def main(bootstrap: str, requests: str, receipts: str, group: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    producer = kafka.producer(bootstrap)
    consumer = kafka.consumer(bootstrap, group, requests)
    await producer.start()
    await consumer.start()
    encode = wire.ENCODER.encode
    decode = wire.decode_request
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            futures = []
            offsets = {}
            for tp, records in batches.items():
                for r in records:
                    if r.value is None:
                        continue
                    try:
                        req = decode(r.value)
                    except ValueError:
                        continue
                    receipt = wire.Receipt(
                        id=req.id, status="sent", ts=time.time_ns() // 1_000_000,
                        account=req.account, carrier="passthrough", route="direct",
                        attempt=1, segments=1, encoding="GSM-7", price=0.0,
                    )  # fmt: skip
                    futures.append(await producer.send(receipts, encode(receipt), key=r.key))
                offsets[tp] = records[-1].offset + 1
            if futures:
                await asyncio.gather(*futures)
            if offsets:
                await consumer.commit(offsets)
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    uvloop.run(main(*sys.argv[1:]))
