"""The worker's own Python per message, without brokers: what one worker pays for a
message's whole life apart from aiokafka, aiomqtt/paho, TLS and the event loop's I/O.

One real ``Pipeline`` on the seed-1 network (its ``Router``, ``Metrics``,
``OffsetTracker`` and attempt memory), a real ``MqttOutbox`` with a ``ReplayGuard`` (as
with security on: every submit signed, every report checked), a real ``CarrierLink``'s
``deliver`` for what comes back, and a real ``KafkaSink`` whose queue is drained here
instead of by its writer task. Requests are the load generator's mix, encoded as the load
generator encodes them. Slice by slice (``--slice`` records, as a fetch hands them in):

1. ``intake``: ``take`` per record (decode, dedupe memory, routing decision, attempt
   record encoded for the write-ahead log);
2. ``write-ahead acked``: the attempt records' acknowledgements (each submits: the
   ``SubmitItem``, its HMAC token);
3. ``submit batches``: the outbox's batches encoded and published (``on_published``);
4. ``results``: the carriers' answers (built and encoded outside the timing, as the
   carriers simulator builds them) through ``CarrierLink.deliver``: decoded, matched,
   ``sent`` receipts and outcome records encoded;
5. ``outcomes acked``: their acknowledgements (offsets done);
6. ``reports``: delivery reports through ``deliver``: decoded, tokens checked, receipts
   encoded;
7. ``report receipts acked``: their acknowledgements (report acknowledgements queued),
   and the acknowledgement batches encoded;
8. ``sink grouping``: what the sink's writer does per record before aiokafka (partition by
   CRC-32, grouping), and ``kafka batches``: aiokafka's own batch builder over the same
   records (``producer.create_batch().append``), apart, since it is the library's.

Apart: ``publisher wake-ups``, the CPU per batch of the MQTT outbox with the link's 64
publishers waiting on it, batches queued one at a time (each used to wake all 64).

The same-run baseline, ``wire floor``: the codec work alone that a message's life needs
(decode the request; encode an attempt record, a submit, two receipts and an outcome
record; decode its result and its report), with msgspec, per message.

Figures are CPU per message (``time.process_time``), best of ``--rounds``. ``--cprofile``
prints the top functions by own time over one more round.

    .venv/bin/python benchmarks/pipeline.py [--messages 20000] [--slice 500] [--cprofile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import BENCH_DIR, network_dir
from router.contracts import interconnect, wire
from router.core.decision import Router
from router.core.network import load_network
from router.core.types import Carrier
from router.engine import attempts, kafka
from router.engine.attempts import AttemptMemory
from router.engine.metrics import Metrics
from router.engine.offsets import OffsetTracker
from router.engine.pipeline import Pipeline
from router.engine.sink import KafkaSink
from router.engine.transports.mqtt import PUBLISHERS, CarrierLink, MqttOutbox
from router.engine.transports.tokens import ReplayGuard, Signer
from router.support import heap, logs
from router.support.credentials import MqttAccess
from router.tools.load.mix import Mix
from router.tools.load.numbers import build_plan
from router.tools.load.traffic import Traffic

HOST = "carriers-1"
TOPIC = "sms.requests"
STAGES = (
    "intake",
    "write-ahead acked",
    "submit batches",
    "results",
    "outcomes acked",
    "reports",
    "report receipts acked",
    "sink grouping",
    "kafka batches",
)
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class Round:
    messages: int = 0
    ns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    outcomes: dict[str, int] = field(default_factory=dict)
    # of it, in the garbage collector (charged to whichever stage ran), per generation
    gc_runs: list[int] = field(default_factory=list)
    gc_ns: list[int] = field(default_factory=list)

    def us(self, stage: str) -> float:
        return self.ns[stage] / 1000 / self.messages


class Bench:
    """One worker's pipeline with its collaborators, driven slice by slice."""

    def __init__(self, router: Router, carriers: dict[str, Carrier], rate: float) -> None:
        # Time moves at ``rate`` messages a second (a slice's worth per slice), so that
        # submit timeouts and the dedupe window run out as they do in a worker at that rate.
        self.now = time.monotonic()
        self.rate = rate
        self.metrics = Metrics(CollectorRegistry())
        self.tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
        self.outbox = MqttOutbox("router-bench", ReplayGuard(Signer(b"k" * 32), 3600.0, 200_000))
        self.sink = KafkaSink(
            None, "sms.receipts", "sms.dead-letter"
        )  # never started: its writer is this benchmark
        self.pipeline = Pipeline(
            router, carriers, self.outbox, self.sink, self.tracker, self.metrics,
            submit_timeout_s=10.0, max_attempts=3, memory=AttemptMemory(300.0, 200_000),
            clock=lambda: self.now,
        )  # fmt: skip
        self.link = CarrierLink(
            MqttAccess("127.0.0.1", 1883), "bench", "fleet", self.outbox, self.pipeline
        )
        self.link.deliver(
            interconnect.directory_topic(HOST),
            interconnect.DIRECTORY.encode(interconnect.HostDirectory(HOST, sorted(carriers))),
        )
        self.results_topic = interconnect.result_topic(self.outbox.reply_to, HOST)
        self.dlr_topic = interconnect.host_dlr_topic(HOST)
        self.offset = 0
        self.producer = kafka.AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", linger_ms=5)
        self.entries: list[tuple[str, int, bytes | None, bytes]] = []

    def _drain_sink(self) -> None:
        """Kafka acknowledges everything queued, in order (callbacks may queue more)."""
        queue = self.sink._queue
        entries = self.entries
        while queue:
            topic, p, key, value, done = queue.popleft()
            entries.append((topic, p, key, value))
            if done is not None:
                done()

    async def slice(self, records: list[bytes], r: Round) -> None:
        clock = time.process_time_ns
        ns = r.ns
        key = (TOPIC, 0)
        take = self.pipeline.take

        t = clock()
        for value in records:
            take(key, TOPIC, 0, self.offset, None, value)
            self.offset += 1
        ns["intake"] += clock() - t

        t = clock()
        self._drain_sink()
        ns["write-ahead acked"] += clock() - t

        t = clock()
        self.outbox.flush()
        batches = []
        while self.outbox.queued:
            batch = await self.outbox.take()
            self.outbox.published()
            if batch[1]:
                self.pipeline.on_published("", batch[1])
                batches.append(batch[2])
        ns["submit batches"] += clock() - t

        results, reports = _answers(batches)  # the carriers' side: not the worker's time

        t = clock()
        for payload in results:
            self.link.deliver(self.results_topic, payload)
        ns["results"] += clock() - t

        t = clock()
        self._drain_sink()
        ns["outcomes acked"] += clock() - t

        t = clock()
        for payload in reports:
            self.link.deliver(self.dlr_topic, payload)
        ns["reports"] += clock() - t

        t = clock()
        self._drain_sink()
        self.outbox.flush()
        while self.outbox.queued:
            await self.outbox.take()
            self.outbox.published()
        self.now += len(records) / self.rate
        self.pipeline.expire_submits()  # the worker's timer (every 50 ms)
        self.tracker.to_commit()
        ns["report receipts acked"] += clock() - t

        t = clock()
        groups = _group(self.entries)
        ns["sink grouping"] += clock() - t
        t = clock()
        for group in groups.values():
            batch = self.producer.create_batch()
            for _, _, k, v in group:
                if batch.append(key=k, value=v, timestamp=None) is None:
                    batch = self.producer.create_batch()
                    batch.append(key=k, value=v, timestamp=None)
        ns["kafka batches"] += clock() - t
        self.entries = []
        r.messages += len(records)


class GcClock:
    """Time spent in the garbage collector, and its collections, per generation."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.ns = [0, 0, 0]
        self._start = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time_ns()
        else:
            self.runs[info["generation"]] += 1
            self.ns[info["generation"]] += time.process_time_ns() - self._start

    def take(self) -> tuple[list[int], list[int]]:
        """(collections, ns) per generation since the last ``take``."""
        out = self.runs, self.ns
        self.runs, self.ns = [0, 0, 0], [0, 0, 0]
        return out


def _group(
    entries: list[tuple[str, int, bytes | None, bytes]],
) -> dict[tuple[str, int], list[tuple[str, int, bytes | None, bytes]]]:
    """As ``KafkaSink._send_round`` groups its records (receipts by CRC-32 of the key)."""
    groups: dict[tuple[str, int], list[tuple[str, int, bytes | None, bytes]]] = {}
    for entry in entries:
        topic, p, key, _ = entry
        if p < 0:
            p = zlib.crc32(key) % 12 if key is not None else 0
        group = groups.get((topic, p))
        if group is None:
            group = groups[(topic, p)] = []
        group.append(entry)
    return groups


def _answers(batches: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """What the carriers send back for these submit batches: every submit accepted, a
    delivery report for each (as ``carriers.endpoint`` builds them)."""
    results, reports = [], []
    for payload in batches:
        sb = interconnect.SUBMIT_BATCH.decode(payload)
        res, reps = [], []
        for item in sb.items:
            res.append(interconnect.SubmitResult(
                id=item.id, accepted=True, carrier=item.carrier, attempt=item.attempt,
                price=item.price, ask=item.ask,
            ))  # fmt: skip
            reps.append(interconnect.DeliveryReport(
                id=item.id, carrier=item.carrier, route="direct", status="delivered",
                ts=item.ts + 1500, account=item.account, price=item.price,
                segments=item.segments, attempt=item.attempt, encoding=item.encoding,
                country=item.country, submitted_ts=item.ts, sender=item.sender,
                quote=item.price, token=item.token,
            ))  # fmt: skip
        results.append(interconnect.RESULT_BATCH.encode(interconnect.SubmitResultBatch(HOST, res)))
        reports.append(
            interconnect.REPORT_BATCH.encode(interconnect.DeliveryReportBatch(HOST, reps))
        )
    return results, reports


async def publisher_wakeups(batches: int = 5000) -> float:
    """CPU µs per batch of the outbox with the link's 64 publishers waiting on it, batches
    queued one at a time (a low rate: each message nearly its own batch)."""
    outbox = MqttOutbox("router-bench")
    outbox.on_directory(HOST, ["c1"])
    taken = 0
    all_taken = asyncio.Event()

    async def publisher() -> None:
        nonlocal taken
        while True:
            await outbox.take()
            await asyncio.sleep(0)  # the publish
            outbox.published()
            taken += 1
            if taken == batches:
                all_taken.set()

    tasks = [asyncio.create_task(publisher()) for _ in range(PUBLISHERS)]
    await asyncio.sleep(0.01)
    item = interconnect.SubmitItem(id="m", to="+447700900123", carrier="c1")
    t = time.process_time_ns()
    for _ in range(batches):
        outbox.submit("c1", item)
        outbox.flush()
        await asyncio.sleep(0.0002)
    await all_taken.wait()
    spent = time.process_time_ns() - t
    for task in tasks:
        task.cancel()
    return spent / 1000 / batches


def _records(traffic: Traffic, n: int) -> list[bytes]:
    now = time.time_ns() // 1_000_000
    return [wire.ENCODER.encode(traffic.next(now)) for _ in range(n)]


def wire_floor(records: list[bytes]) -> float:
    """µs per message of the codec work alone (see the module's doc)."""
    requests = [wire.decode_request(v) for v in records]
    item = interconnect.SubmitItem(id="x" * 26, to="+447700900123", carrier="c" * 12,
                                   account="AC00000000", segments=1, price=0.01, ts=1,
                                   token=b"t" * 16)  # fmt: skip
    res = interconnect.RESULT_BATCH.encode(interconnect.SubmitResultBatch(HOST, [
        interconnect.SubmitResult(id="x" * 26, accepted=True, carrier="c" * 12, price=0.01)
    ] * 256))  # fmt: skip
    rep = interconnect.REPORT_BATCH.encode(interconnect.DeliveryReportBatch(HOST, [
        interconnect.DeliveryReport(id="x" * 26, carrier="c" * 12, route="direct",
                                    status="delivered", ts=1, token=b"t" * 16)
    ] * 256))  # fmt: skip
    receipt = wire.Receipt(id="x" * 26, status="sent", ts=1, account="AC00000000",
                           carrier="c" * 12, route="direct", attempt=1, segments=1,
                           encoding="GSM-7", price=0.01)  # fmt: skip
    record = attempts.AttemptRecord(id="x" * 26, state=attempts.SENT, carrier="c" * 12,
                                    attempt=1, kind="direct", price=0.01, tried=(),
                                    segments=1, encoding="GSM-7", ts=1)  # fmt: skip
    enc_r, enc_a = wire.ENCODER.encode, attempts.ENCODER.encode
    items = [item] * 256
    t = time.process_time_ns()
    for v in records:
        wire.decode_request(v)
    for _ in requests:
        enc_a(record)
        enc_a(record)
        enc_r(receipt)
        enc_r(receipt)
    for _ in range(0, len(records), 256):
        interconnect.SUBMIT_BATCH.encode(interconnect.SubmitBatch("", "r", items))
        interconnect.RESULT_BATCH.decode(res)
        interconnect.REPORT_BATCH.decode(rep)
    return (time.process_time_ns() - t) / 1000 / len(records)


async def run(args: argparse.Namespace) -> dict[str, object]:
    network = network_dir(BENCH_DIR, args.network)
    console.print(f"network {network}; loading it and drawing {args.messages:,} requests")
    table = load_network(network)
    plan = build_plan(network, 1)
    traffic = Traffic(plan, Mix(), 1, "p-")
    router = Router(table)  # one for all rounds, as a worker's, its health carried on
    heap.settle()  # as the worker does once its network is loaded
    if args.gen0 is not None:
        gc.set_threshold(args.gen0, *gc.get_threshold()[1:])
    gc_clock = GcClock()
    rounds: list[Round] = []
    floor = []
    for i in range(args.rounds + (1 if args.cprofile else 0)):
        bench = Bench(router, table.carriers, args.rate)
        records = _records(traffic, args.messages)
        floor.append(wire_floor(records))
        gc_clock.take()
        r = Round()
        profiler = cProfile.Profile() if args.cprofile and i == args.rounds else None
        if profiler is not None:
            profiler.enable()
        for at in range(0, len(records), args.slice):
            await bench.slice(records[at : at + args.slice], r)
        await bench.producer.stop()  # never started: only its batch builder was used
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile_top)
            continue
        r.outcomes = {
            k: int(v) for k, v in _counts(bench.metrics.registry, "supernet_receipts_total").items()
        }
        r.gc_runs, r.gc_ns = gc_clock.take()
        rounds.append(r)
    best = min(rounds, key=lambda r: sum(r.ns.values()))
    return {
        "messages": best.messages,
        "slice": args.slice,
        "us_per_message": {s: round(best.us(s), 2) for s in STAGES},
        "total_us": round(sum(best.us(s) for s in STAGES), 1),
        "wire_floor_us": round(min(floor), 2),
        "gc_threshold": gc.get_threshold(),
        "gc_us": round(sum(best.gc_ns) / 1000 / best.messages, 2),
        "gc_collections": best.gc_runs,
        "gc_ms": [round(ns / 1e6, 1) for ns in best.gc_ns],
        "receipts": best.outcomes,
        "publisher_wakeup_us_per_batch": round(await publisher_wakeups(), 1),
    }


def _counts(registry: CollectorRegistry, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name:
                out[s.labels.get("status", "")] = out.get(s.labels.get("status", ""), 0) + s.value
    return out


def show(result: dict[str, object]) -> None:
    us = result["us_per_message"]
    assert isinstance(us, dict)
    t = Table(title=f"worker pipeline, CPU µs per message ({result['messages']:,} messages, "
                    f"slices of {result['slice']})")  # fmt: skip
    t.add_column("stage")
    t.add_column("µs/msg", justify="right")
    for stage in STAGES:
        t.add_row(stage, f"{us[stage]:.2f}")
    t.add_row("[b]all stages[/b]", f"[b]{result['total_us']:.1f}[/b]")
    t.add_row("of all: in the garbage collector", f"{result['gc_us']:.2f}")
    t.add_row("wire floor (msgspec alone)", f"{result['wire_floor_us']:.2f}")
    console.print(t)
    console.print(f"receipts by status: {result['receipts']}")
    console.print(f"the outbox with {PUBLISHERS} publishers waiting: "
                  f"{result['publisher_wakeup_us_per_batch']} µs of CPU per batch")  # fmt: skip
    console.print(f"garbage collector: thresholds {result['gc_threshold']}; collections by "
                  f"generation {result['gc_collections']}, ms {result['gc_ms']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="CPU per message of one worker's pipeline, without brokers "
        "(see the module's docstring for the stages)."
    )
    p.add_argument("--messages", type=int, default=20_000, help="messages per round")
    p.add_argument("--slice", type=int, default=500, help="records per fetch slice")
    p.add_argument("--rate", type=float, default=3000.0,
                   help="messages a second the pipeline's clock moves at (submit timeouts, "
                   "the dedupe window)")  # fmt: skip
    p.add_argument("--gen0", type=int,
                   help="the youngest generation's collection threshold (default: the "
                   f"worker's, {heap.GEN0_THRESHOLD}; CPython's own is 700)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="rounds; the best one is shown")
    p.add_argument("--network", type=Path, help="network directory (default: seed 1)")
    p.add_argument("--cprofile", action="store_true", help="profile one more round")
    p.add_argument("--cprofile-top", type=int, default=30, help="functions to print")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    logs.configure("console", "warning")  # a worker logs at info; these are status lines
    if args.messages < 1 or args.slice < 1 or args.rounds < 1:
        p.error("--messages, --slice and --rounds must be at least 1")
    result = uvloop.run(run(args))
    show(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
