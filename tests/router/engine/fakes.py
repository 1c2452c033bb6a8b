"""Plain fakes around ``router.engine.pipeline.Pipeline``: no brokers, no real time.

``World`` wires a real ``Router`` (the example network) to a ``FakeLink`` (the carrier
transport's outbox, a ``router.engine.transports.base.Submitter``) that records submits,
a ``FakeSink`` that records receipts and dead letters and lets the test decide when Kafka
acknowledges them, a real ``OffsetTracker`` and fake clocks. Expected prices come from
``deck_price``, which reads the example decks' CSV files directly.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from router.contracts import interconnect, wire
from router.core.decision import Router
from router.core.network import example_network, load_network
from router.engine.attempts import AttemptRecord
from router.engine.metrics import Metrics
from router.engine.offsets import OffsetTracker
from router.engine.pipeline import Pipeline

AS_OF = dt.date(2025, 6, 1)
"""The deck day every test routes on, so future-dated deck rows never change a price."""
WALL_START_MS = 1_750_000_000_000
TOPIC = "sms.requests"
PARTITION = "sms.requests/0"
PARTITION_NO = 0

# Destinations in the example network (checked against the decks in the tests).
GB_MULTI = "+447700900123"  # gb-ee, gb-o2 and three aggregators
US_MULTI = "+12025550123"  # us-att, us-tmobile and two aggregators
FR_SINGLE = "+33612345678"  # agg-premium only
ES_NONE = "+34612345678"  # a valid Spanish mobile number; no deck reaches Spain

Done = Callable[[], None]


def deck_price(carrier: str, to: str, day: dt.date = AS_OF) -> float | None:
    """The carrier's price per segment for ``to`` on ``day``, read from its deck CSV:
    the row with the longest matching prefix, latest ``effective_from`` not after ``day``.
    None when the deck does not reach ``to``."""
    network = msgspec.json.decode((example_network() / "network.json").read_bytes())
    deck = next(c["deck"] for c in network["carriers"] if c["id"] == carrier)
    digits = to.lstrip("+")
    best: tuple[int, str, float] | None = None
    with Path(example_network(), deck).open(newline="") as f:
        for row in csv.DictReader(f):
            prefix, since = row["prefix"], row["effective_from"]
            if not digits.startswith(prefix) or dt.date.fromisoformat(since) > day:
                continue
            candidate = (len(prefix), since, float(row["price"]))
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    return None if best is None else best[2]


def carriers_reaching(to: str) -> set[str]:
    network = msgspec.json.decode((example_network() / "network.json").read_bytes())
    return {c["id"] for c in network["carriers"] if deck_price(c["id"], to) is not None}


def new_router() -> Router:
    """A fresh router: each has its own table, since tables cache rankings per health."""
    return Router(load_network(example_network(), AS_OF))


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWall:
    """Wall-clock milliseconds that move only when the test says so."""

    def __init__(self, start_ms: int = WALL_START_MS) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


@dataclass
class Record:
    """One thing written to the sink: a receipt or a dead letter, acknowledged or not."""

    receipt: wire.Receipt | None
    on_durable: Done | None
    value: bytes | None = None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    acked: bool = False

    @property
    def is_outcome(self) -> bool:
        """A request's final word: a dead letter or a ``sent``/``failed`` receipt."""
        return self.receipt is None or self.receipt.status in ("sent", "failed")


class FakeSink:
    """Records what the pipeline writes; ``ack`` plays Kafka making a record durable.

    Attempt records (the write-ahead log) are acknowledged at once unless
    ``hold_attempts`` is set; then ``ack_attempts`` plays Kafka taking them."""

    def __init__(self, hold_attempts: bool = False) -> None:
        self.records: list[Record] = []
        self.acking: Record | None = None  # the record whose on_durable is running
        self.hold_attempts = hold_attempts
        self.attempts: list[tuple[AttemptRecord, int]] = []  # (record, partition)
        self._held: list[Done] = []

    def attempt(self, record: AttemptRecord, partition: int, on_durable: Done | None) -> None:
        self.attempts.append((record, partition))
        if on_durable is None:
            return
        if self.hold_attempts:
            self._held.append(on_durable)
        else:
            on_durable()

    def ack_attempts(self) -> None:
        held, self._held = self._held, []
        for done in held:
            done()

    def receipt(self, receipt: wire.Receipt, on_durable: Done | None) -> None:
        self.records.append(Record(receipt, on_durable))

    def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_durable: Done,
    ) -> None:
        self.records.append(Record(None, on_durable, value, key, list(headers)))

    @property
    def receipts(self) -> list[wire.Receipt]:
        return [r.receipt for r in self.records if r.receipt is not None]

    @property
    def dead_letters(self) -> list[Record]:
        return [r for r in self.records if r.receipt is None]

    @property
    def outcomes(self) -> list[Record]:
        return [r for r in self.records if r.is_outcome]

    def unacked(self) -> list[Record]:
        return [r for r in self.records if not r.acked and r.on_durable is not None]

    def ack(self, record: Record) -> None:
        assert not record.acked, "Kafka acknowledges a record once"
        assert record.on_durable is not None
        record.acked = True
        self.acking = record
        try:
            record.on_durable()
        finally:
            self.acking = None

    def ack_all(self) -> None:
        for record in self.unacked():
            self.ack(record)


class FakeLink:
    """Records every submit and report acknowledgement; the test answers submits through
    the pipeline's callbacks."""

    def __init__(self) -> None:
        self.submits: list[tuple[str, interconnect.SubmitItem]] = []
        self.report_acks: list[tuple[str, str, str]] = []  # (host, carrier, id)

    def submit(self, carrier: str, item: interconnect.SubmitItem) -> None:
        self.submits.append((carrier, item))

    def ack_report(self, host: str, carrier: str, message_id: str) -> None:
        self.report_acks.append((host, carrier, message_id))


class RecordingTracker(OffsetTracker[Any]):
    """The real tracker, noting which offsets were marked done and from which record."""

    def __init__(self, sink: FakeSink) -> None:
        super().__init__()
        self.sink = sink
        self.done_by: dict[tuple[Any, int], list[Record | None]] = {}

    def done(self, partition: Any, offset: int) -> None:
        self.done_by.setdefault((partition, offset), []).append(self.sink.acking)
        super().done(partition, offset)


def request(
    id: str = "m1",
    to: str = GB_MULTI,
    body: str = "hello",
    **extra: Any,
) -> bytes:
    return msgspec.json.encode({"id": id, "to": to, "body": body, **extra})


class World:
    """A pipeline with fakes all round, and helpers to drive it like the worker does."""

    def __init__(self, *, submit_timeout_s: float = 2.0, max_attempts: int = 3) -> None:
        self.router = new_router()
        self.clock = FakeClock()
        self.wall = FakeWall()
        self.sink = FakeSink()
        self.link = FakeLink()
        self.tracker = RecordingTracker(self.sink)
        self.metrics = Metrics(CollectorRegistry())
        self.pipeline = Pipeline(
            self.router,
            self.router.table.carriers,
            self.link,
            self.sink,
            self.tracker,
            self.metrics,
            submit_timeout_s=submit_timeout_s,
            max_attempts=max_attempts,
            clock=self.clock,
            wall_ms=self.wall,
        )
        self.next_offset = 100

    def take(self, value: bytes | None, key: bytes | None = b"key") -> int:
        """Hand one record to the pipeline; returns its offset."""
        offset = self.next_offset
        self.next_offset += 1
        self.pipeline.take(PARTITION, TOPIC, PARTITION_NO, offset, key, value)
        return offset

    def committable(self) -> int | None:
        return self.tracker.committable(PARTITION)

    def last_submit(self) -> tuple[str, interconnect.SubmitItem]:
        assert self.link.submits, "nothing was submitted"
        return self.link.submits[-1]

    def publish(self, carrier: str, item: interconnect.SubmitItem) -> None:
        self.pipeline.on_published(carrier, [item])

    def accept(
        self, carrier: str, item: interconnect.SubmitItem, price: float | None = None
    ) -> None:
        billed = item.price if price is None else price
        result = interconnect.SubmitResult(
            id=item.id,
            accepted=True,
            carrier=carrier,
            attempt=item.attempt,
            price=billed,
            ask=item.ask,
        )
        self.pipeline.on_results(carrier, [result])

    def reject(self, carrier: str, item: interconnect.SubmitItem, code: int | None) -> None:
        result = interconnect.SubmitResult(
            id=item.id,
            accepted=False,
            carrier=carrier,
            attempt=item.attempt,
            code=code,
            ask=item.ask,
        )
        self.pipeline.on_results(carrier, [result])
