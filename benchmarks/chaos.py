"""Chaos benchmark: the whole engine under faults, on the project's own brokers on their
own ports and state directory (.supernet/chaos), so that Kafka and Mosquitto can be
SIGKILLed and restarted without touching anyone else's.

Every scenario starts fresh topics (unique names), one `supernet carriers` process on
the seed-1 network writing its journal (`--journal`: the carriers' ground truth), a fleet
of workers (`supernet fleet`) and `supernet load` at --rate for --duration seconds, and
during the load:

  worker-kill        SIGKILL one worker (alternating slots) every --kill-every seconds;
  kafka-restart      SIGKILL the Kafka broker (pid file of `supernet infra up`) at
                     --fault-at of the run, `supernet infra up --only kafka` --down-s later;
  mosquitto-restart  the same for Mosquitto;
  carriers-restart   SIGKILL the carriers, start them again --down-s later with the same
                     arguments and journal;
  hostile            kcat, a foreign client, mixes --hostile records of the kinds in
                     KINDS into the requests topic, each with its expected outcome (a dead
                     letter, a `failed` receipt with a code, or `sent`), the two poison
                     pills of issue 9 among them;
  repeats            --repeat-ids ids are each produced three times, 0.5 to 5 s apart,
                     as a producer that retries.

After the load, the run waits until outcomes stop arriving (at most --settle-s), stops
the carriers (their journal is then complete) and the fleet, reads the run's topics
back from Kafka and reports, per scenario: requests produced, with an outcome (`sent`
or `failed` receipt, or a dead letter), lost (none), ids accepted by two or more
carriers (journal), delivery reports published but never a receipt (journal vs
receipts by (id, status)), duplicate receipts (same (id, status) again), worker
restarts (the fleet's "worker exited; restarting"), seconds of the load window without
any outcome, recovery (seconds from the fault's end until outcomes per second are back
to half the pre-fault median, two seconds in a row) and requests produced after recovery
that failed with 39001, 30008 or 30001. The baseline is the same run before its fault.

    .venv/bin/python benchmarks/chaos.py --quick                   # ~20 s per scenario
    .venv/bin/python benchmarks/chaos.py                           # 120 s per scenario
    .venv/bin/python benchmarks/chaos.py --scenarios hostile,repeats --out out/c.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from router.contracts.codes import Code

if not __package__:  # run as a script: make `benchmarks._harness` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
import uvloop
from rich.console import Console
from rich.table import Table

from benchmarks._harness import (
    Procs,
    Rec,
    TopicReader,
    flags_of,
    fleet_workers,
    infra_up,
    network_dir,
    supernet,
    until_idle,
)
from router.contracts import wire
from router.engine import kafka
from router.support.infra_settings import PROJECT_ROOT, InfraSettings
from router.tools.infra import lifecycle as infra
from router.tools.infra.brokers import BROKERS
from router.tools.load.mix import Mix
from router.tools.load.numbers import NumberPlan, build_plan
from router.tools.load.traffic import Traffic

console = Console(width=None if sys.stdout.isatty() else 220)
CHAOS_DIR = PROJECT_ROOT / ".supernet" / "chaos"
SCENARIOS = (
    "worker-kill", "kafka-restart", "mosquitto-restart", "carriers-restart", "hostile", "repeats",
)  # fmt: skip
BROKER_OF = {"kafka-restart": "kafka", "mosquitto-restart": "mosquitto"}
PERMANENT = (
    Code.CARRIERS_UNAVAILABLE,
    Code.UNKNOWN_ERROR,
    Code.QUEUE_OVERFLOW,
)  # codes that must not outlast a fault
RESTARTING = "worker exited; restarting"  # the fleet's line for every restart

# -- the hostile mix: kinds of bad input and what each must become -------------------------

Outcome = Literal["dead", "failed", "sent"]


@dataclass(frozen=True, slots=True)
class Expect:
    outcome: Outcome
    code: int | None = None  # for "failed"
    reasons: frozenset[str] | None = None  # for "dead": acceptable supernet-reason labels

    def __str__(self) -> str:
        if self.outcome == "failed":
            return f"failed {self.code}"
        if self.outcome == "dead":
            return "dead letter" + (f" ({'|'.join(sorted(self.reasons))})" if self.reasons else "")
        return "sent"


@dataclass(frozen=True, slots=True)
class Ctx:
    """What the builders need: a tag for unique ids and some routable numbers."""

    tag: str
    numbers: tuple[str, ...]  # valid E.164 destinations the network routes
    now_ms: int

    def number(self, i: int) -> str:
        return self.numbers[i % len(self.numbers)]


Build = Callable[[Ctx, str], tuple[str | None, bytes | None]]  # (ctx, id) -> (id, value)


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    expect: Expect
    build: Build
    heavy: bool = False  # megabytes: only a couple of records of it


@dataclass(frozen=True, slots=True)
class Hostile:
    key: bytes  # bookkeeping: finds the record's offset in the requests topic
    value: bytes | None
    kind: str
    id: str | None  # the id a receipt would carry, when the record has a string id


DROP = object()
BODY = "Your code is 123456"
P1 = (
    b'{"id":"p1","to":"+447911123456","body":"x","created_at":1700000000000,'
    b'"validity_s":1e306}'
)  # issue 9's first poison pill, byte for byte


def _enc(fields: Mapping[str, object]) -> bytes:
    return json.dumps(
        {k: v for k, v in fields.items() if v is not DROP}, ensure_ascii=False,
        separators=(",", ":"),
    ).encode()  # fmt: skip


def req(**over: object) -> Build:
    """A valid request to a routable number with fields replaced (DROP removes one; a
    callable is called with the context and the record's id)."""

    def build(ctx: Ctx, id: str) -> tuple[str | None, bytes | None]:
        fields: dict[str, object] = {"id": id, "to": ctx.number(zlib.crc32(id.encode())),
                                     "body": BODY}  # fmt: skip
        for k, v in over.items():
            fields[k] = v(ctx, id) if callable(v) else v
        got = fields.get("id")
        return (got if isinstance(got, str) and got else None), _enc(fields)

    return build


def raw(value: bytes | None, with_id: bool = False) -> Build:
    """Bytes as they are (``with_id``: ``@ID@`` in them is replaced by the id)."""

    def build(ctx: Ctx, id: str) -> tuple[str | None, bytes | None]:
        if value is None or not with_id:
            return None, value
        return id, value.replace(b"@ID@", id.encode())

    return build


def patched(old: str, new: bytes, **over: object) -> Build:
    """A valid request whose encoded ``old`` text is replaced by raw bytes ``new``."""
    inner = req(**over)

    def build(ctx: Ctx, id: str) -> tuple[str | None, bytes | None]:
        got, value = inner(ctx, id)
        assert value is not None
        return got, value.replace(old.encode(), new, 1)

    return build


def _garbage(n: int, seed: int = 9) -> bytes:
    return random.Random(seed).randbytes(n)


def _letters(n: int) -> bytes:
    return (b"abcdefghijklmnopqrstuvwxyz0123456789" * (n // 36 + 1))[:n]


def _spaced(n: str) -> str:
    return f"{n[:3]} {n[3:7]} {n[7:]}"


def _dashed(n: str) -> str:
    return f"{n[:3]}-{n[3:7]}-{n[7:]}"


def _dotted(n: str) -> str:
    return f"{n[:3]}.{n[3:7]}.{n[7:]}"


def _parens(n: str) -> str:
    return f"{n[:3]} ({n[3:6]}) {n[6:]}"


def _expired(ms_ago: int) -> Callable[[Ctx, str], int]:
    return lambda ctx, id: ctx.now_ms - ms_ago


DEEP = 10_000
INVALID = frozenset({"invalid_field"})
MISSING = frozenset({"missing_field"})
NOT_JSON = frozenset({"not_json"})
BAD_UTF8 = frozenset({"bad_utf8"})
DEAD_I, DEAD_M, DEAD_J, DEAD_U = (Expect("dead", None, r) for r in (INVALID, MISSING, NOT_JSON,
                                                                     BAD_UTF8))  # fmt: skip
DEAD_ANY = Expect("dead")
SENT = Expect("sent")


def failed(code: int) -> Expect:
    return Expect("failed", code)


KINDS: tuple[Kind, ...] = (
    # Undecodable: a dead letter, the bytes unchanged, and no receipt.
    Kind("not-json", DEAD_J, raw(b"not json at all")),
    Kind("truncated-json", DEAD_J, raw(b'{"id":"@ID@","to":"+447911123456","body":"hi"', True)),
    Kind("binary-garbage", Expect("dead", None, NOT_JSON | BAD_UTF8), raw(_garbage(256))),
    Kind("trailing-garbage", DEAD_J, patched(BODY + '"}', BODY.encode() + b'"} xyz')),
    Kind(
        "two-objects", DEAD_J, raw(b'{"id":"@ID@","to":"+447911123456","body":"a"}{"id":"b"}', True)
    ),
    Kind(
        "bom-prefixed",
        DEAD_J,
        raw(b'\xef\xbb\xbf{"id":"@ID@","to":"+447911123456","body":"x"}', True),
    ),
    Kind("nan-literal", DEAD_J, patched('"max_price":0', b'"max_price":NaN', max_price=0)),
    Kind(
        "infinity-literal",
        DEAD_J,
        patched('"validity_s":1', b'"validity_s":Infinity', validity_s=1),
    ),
    Kind("empty-value", DEAD_J, raw(b"")),
    Kind("null-value", DEAD_J, raw(None)),
    Kind("json-array", DEAD_I, raw(b"[1,2,3]")),
    Kind("json-string", DEAD_I, raw(b'"hello"')),
    Kind("json-number", DEAD_I, raw(b"42")),
    Kind("json-null", DEAD_I, raw(b"null")),
    Kind("bad-utf8-body", DEAD_U, patched(BODY, b"\xff\xfe code")),
    Kind("bad-utf8-to", DEAD_U, patched("+", b"+\xc3\x28")),
    Kind("overlong-utf8", DEAD_U, patched(BODY, b"\xc0\xaf")),
    Kind("lone-surrogate", Expect("dead", None, NOT_JSON | BAD_UTF8), patched(BODY, b"\\ud800")),
    Kind("id-int", DEAD_I, req(id=42)),
    Kind("id-null", DEAD_I, req(id=None)),
    Kind("id-empty", DEAD_I, req(id="")),
    Kind("id-129-chars", DEAD_I, req(id=lambda ctx, id: id.ljust(129, "i"))),
    Kind("id-object", DEAD_I, req(id={"v": "x"})),
    Kind("to-int", DEAD_I, req(to=447911123456)),
    Kind("to-null", DEAD_I, req(to=None)),
    Kind("to-object", DEAD_I, req(to={"number": "+447911123456"})),
    Kind("body-list", DEAD_I, req(body=["x"])),
    Kind("body-null", DEAD_I, req(body=None)),
    Kind("body-object", DEAD_I, req(body={"text": "x"})),
    Kind("account-object", DEAD_I, req(account={"a": 1})),
    Kind("account-129-chars", DEAD_I, req(account="a" * 129)),
    Kind("from-65-chars", DEAD_I, req(**{"from": "f" * 65})),
    Kind("class-unknown", DEAD_I, req(**{"class": "spam"})),
    Kind("class-uppercase", DEAD_I, req(**{"class": "OTP"})),
    Kind("max-price-string", DEAD_I, req(max_price="cheap")),
    Kind("max-price-bool", DEAD_I, req(max_price=True)),
    Kind("max-price-negative", DEAD_I, req(max_price=-0.5)),
    Kind("max-price-1e400", DEAD_I, patched('"max_price":1', b'"max_price":1e400', max_price=1)),
    Kind("max-price-1e6", DEAD_I, req(max_price=1e6)),
    Kind("validity-string", DEAD_I, req(validity_s="60")),
    Kind("validity-negative", DEAD_I, req(validity_s=-60)),
    Kind("validity-zero", DEAD_I, req(validity_s=0)),
    Kind("validity-1e400", DEAD_I, patched('"validity_s":1', b'"validity_s":1e400', validity_s=1)),
    Kind("validity-1e306", DEAD_I, req(validity_s=1e306, created_at=1_700_000_000_000)),
    Kind("created-at-string", DEAD_I, req(created_at="yesterday")),
    Kind("created-at-float", DEAD_I, req(created_at=1.7e12 + 0.5)),
    Kind("created-at-negative", DEAD_I, req(created_at=-5)),
    Kind("created-at-2e20", DEAD_I, req(created_at=2 * 10**20)),
    Kind("missing-id", DEAD_M, req(id=DROP)),
    Kind("missing-to", DEAD_M, req(to=DROP)),
    Kind("missing-body", DEAD_M, req(body=DROP)),
    Kind("empty-object", DEAD_M, raw(b"{}")),
    Kind("deep-array", DEAD_ANY, raw(b"[" * DEEP + b"]" * DEEP)),
    Kind("deep-object", DEAD_ANY, raw(b'{"a":' * DEEP + b"1" + b"}" * DEEP)),
    Kind("deep-body", DEAD_ANY, patched(f'"{BODY}"', b"[" * DEEP + b"]" * DEEP)),
    Kind("garbage-5mb", DEAD_J, raw(b"{" + _letters(5_000_000) + b"}"), heavy=True),
    # Decodable but refused: a `failed` receipt with the code.
    Kind("to-too-short", failed(21211), req(to="+44123")),
    Kind("to-too-long", failed(21211), req(to="+4477009001234567")),
    Kind("to-no-plus", failed(21211), req(to="447911123456")),
    Kind("to-national", failed(21211), req(to="07911123456")),
    Kind("to-00-prefix", failed(21211), req(to="00447911123456")),
    Kind("to-plus-zero", failed(21211), req(to="+0447911123456")),
    Kind("to-letters", failed(21211), req(to="+44CALLNOW")),
    Kind("to-empty", failed(21211), req(to="")),
    Kind("to-plus-only", failed(21211), req(to="+")),
    Kind("to-fullwidth-digits", failed(21211), req(to="+\uff14\uff147911123456")),
    Kind("unknown-country", failed(21211), req(to="+999123456789")),
    Kind("to-6mb-u0080", failed(21211), req(to="\u0080" * 3_000_000), heavy=True),
    Kind("to-1mb-digits", failed(21211), req(to="+" + "7" * 1_000_000), heavy=True),
    Kind("body-empty", failed(21602), req(body="")),
    Kind("body-1601-gsm", failed(21617), req(body="a" * 1601)),
    Kind("body-1601-ucs2", failed(21617), req(body="\u0436" * 1601)),
    Kind("body-1mb", failed(21617), req(body="b" * 1_000_000), heavy=True),
    Kind("max-price-too-low", failed(21618), req(max_price=0.000001)),
    Kind("max-price-zero", failed(21618), req(max_price=0)),
    Kind("expired", failed(30036), req(created_at=_expired(3_600_000), validity_s=60)),
    Kind("expired-2023", failed(30036), req(created_at=1_700_000_000_000, validity_s=60)),
    # Odd but valid: routed and `sent` (numbers as people type them, normalised).
    Kind("control", SENT, req()),
    Kind("issue-spaced", SENT, req(to="+44 7911 123456")),
    Kind("to-spaced", SENT, req(to=lambda ctx, id: _spaced(ctx.number(len(id))))),
    Kind("to-dashed", SENT, req(to=lambda ctx, id: _dashed(ctx.number(len(id))))),
    Kind("to-dotted", SENT, req(to=lambda ctx, id: _dotted(ctx.number(len(id))))),
    Kind("to-parens", SENT, req(to=lambda ctx, id: _parens(ctx.number(len(id))))),
    Kind("unknown-fields", SENT, req(x_tracking={"a": [1, 2, {"b": None}]}, x_flag=True)),
    Kind("unknown-field-1mb", SENT, req(x_blob="z" * 1_000_000), heavy=True),
    Kind("id-128-chars", SENT, req(id=lambda ctx, id: id.ljust(128, "m"))),
    Kind("emoji-body", SENT, req(body="Your parcel \U0001f4e6 is on its way \u2705")),
    Kind("escaped-surrogates", SENT, patched(BODY, b"\\ud83d\\ude00 hi")),
    Kind("max-price-null", SENT, req(max_price=None)),
    Kind("validity-one-year", SENT, req(validity_s=366 * 24 * 3600)),
    Kind("whitespace-padded", SENT, patched("{", b" \n\t {")),
)
KIND_BY_NAME = {k.name: k for k in KINDS}
assert len(KIND_BY_NAME) == len(KINDS) >= 50


def hostile_records(ctx: Ctx, total: int, seed: int = 1) -> list[Hostile]:
    """``total`` records (about) over every kind, heavy kinds one or two, shuffled;
    issue 9's first poison pill (id ``p1``) once, byte for byte."""
    heavy = 1 if total < 2000 else 2
    light = [k for k in KINDS if not k.heavy]
    each = max(1, -(-(total - heavy * (len(KINDS) - len(light)) - 1) // len(light)))
    out = [Hostile(f"{ctx.tag}|issue-p1|0".encode(), P1, "issue-p1", "p1")]
    for k in KINDS:
        for i in range(heavy if k.heavy else each):
            rid, value = k.build(ctx, f"{ctx.tag}-{k.name}-{i}")
            out.append(Hostile(f"{ctx.tag}|{k.name}|{i}".encode(), value, k.name, rid))
    random.Random(seed).shuffle(out)
    return out


def expectation(kind: str) -> Expect:
    # p1's validity of 1e306 s is as out of range as 1e400: the contract's limit is a year.
    return DEAD_I if kind == "issue-p1" else KIND_BY_NAME[kind].expect


# -- the carriers' ground truth (carriers/journal.py) ---------------------------------------


class GroundTruth(Protocol):
    @property
    def accepted(self) -> Mapping[str, frozenset[str]]: ...  # id -> carriers that took it

    @property
    def reports_published(self) -> Mapping[tuple[str, str], str]: ...  # (carrier, id)

    @property
    def reports_acked(self) -> frozenset[tuple[str, str]]: ...


def ground_truth(paths: Sequence[Path]) -> GroundTruth | None:
    """The journal's ground truth, or None while carriers.journal does not exist."""
    try:
        journal = importlib.import_module("carriers.journal")
    except ImportError:
        return None
    gt: GroundTruth = journal.ground_truth([p for p in paths if p.exists()])
    return gt


# -- what came back from Kafka --------------------------------------------------------------


class _Id(msgspec.Struct):
    id: str


_ID = msgspec.json.Decoder(_Id)
Ident = str | tuple[int, int]  # a request's id, or (partition, offset) if it has none


@dataclass(frozen=True, slots=True)
class Request:
    ident: Ident
    key: bytes | None
    digest: bytes
    ts: int  # ms, the record's timestamp


@dataclass(frozen=True, slots=True)
class Dead:
    reason: str
    digest: bytes
    ts: int


def _digest(value: bytes | None) -> bytes:
    return b"null" if value is None else hashlib.blake2b(value, digest_size=16).digest()


@dataclass
class Observed:
    """The run's requests, receipts and dead letters, followed live (an `on_record`)."""

    requests_topic: str
    receipts_topic: str
    dead_letter_topic: str
    requests: dict[tuple[int, int], Request] = field(default_factory=dict)
    offsets: dict[Ident, list[tuple[int, int]]] = field(default_factory=dict)
    receipts: list[wire.Receipt] = field(default_factory=list)
    first_outcome: dict[str, wire.Receipt] = field(default_factory=dict)
    receipt_keys: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead: dict[tuple[int, int], Dead] = field(default_factory=dict)
    outcome_ms: list[int] = field(default_factory=list)  # every outcome's time
    open: set[Ident] = field(default_factory=set)  # requests without an outcome yet
    answered: set[Ident] = field(default_factory=set)
    undecodable_receipts: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set on every outcome
    started: asyncio.Event = field(default_factory=asyncio.Event)  # the first request is in
    first_request: float | None = None  # wall clock s

    def on_record(self, r: Rec) -> None:
        if r.topic == self.requests_topic:
            self._request(r)
        elif r.topic == self.receipts_topic:
            self._receipt(r)
        elif r.topic == self.dead_letter_topic:
            self._dead(r)

    def _request(self, r: Rec) -> None:
        po = (r.partition, r.offset)
        ident: Ident = po
        if r.value:
            try:
                got = _ID.decode(r.value).id
                ident = got or po
            except (ValueError, RecursionError):
                pass
        self.requests[po] = Request(ident, r.key, _digest(r.value), r.timestamp)
        self.offsets.setdefault(ident, []).append(po)
        if self.first_request is None:
            self.first_request = time.time()
            self.started.set()
        if po in self.dead:
            self._answer(ident)
        elif ident not in self.answered:
            self.open.add(ident)

    def _answer(self, ident: Ident) -> None:
        self.answered.add(ident)
        self.open.discard(ident)
        self.progress.set()

    def _receipt(self, r: Rec) -> None:
        try:
            rc = wire.RECEIPT_DECODER.decode(r.value or b"")
        except msgspec.DecodeError:
            self.undecodable_receipts += 1
            return
        self.receipts.append(rc)
        self.receipt_keys[rc.id, rc.status] += 1
        if rc.status in ("sent", "failed"):
            self.first_outcome.setdefault(rc.id, rc)
            self.outcome_ms.append(rc.ts)
            self._answer(rc.id)

    def _dead(self, r: Rec) -> None:
        h = dict(r.headers)
        if h.get(wire.DLQ_TOPIC) != self.requests_topic.encode():
            return
        po = (int(h[wire.DLQ_PARTITION]), int(h[wire.DLQ_OFFSET]))
        reason = h.get(wire.DLQ_REASON, b"").decode(errors="replace")
        self.dead.setdefault(po, Dead(reason.split(":", 1)[0], _digest(r.value), r.timestamp))
        self.outcome_ms.append(r.timestamp)
        req = self.requests.get(po)
        if req is not None:
            self._answer(req.ident)

    def has_outcome(self, ident: Ident) -> bool:
        if isinstance(ident, str) and ident in self.first_outcome:
            return True
        return any(po in self.dead for po in self.offsets.get(ident, ()))

    def request_ts(self, ident: Ident) -> int | None:
        pos = self.offsets.get(ident)
        return self.requests[pos[0]].ts if pos else None


# -- figures (pure) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    started: float  # wall clock s
    ended: float
    detail: str = ""


def per_second(times_ms: Iterable[int]) -> Counter[int]:
    return Counter(t // 1000 for t in times_ms)


def zero_seconds(buckets: Counter[int], end_s: int) -> int:
    """Seconds from the first outcome to ``end_s`` (inclusive) with no outcome."""
    if not buckets:
        return 0
    return sum(1 for s in range(min(buckets), end_s + 1) if not buckets.get(s))


def recovery_s(
    buckets: Counter[int], baseline: tuple[float, float], fault_end: float
) -> float | None:
    """Seconds from ``fault_end`` until two seconds in a row have at least half the median
    outcomes per second of the full seconds in ``baseline`` (start, end); None if never."""
    pre = [buckets.get(s, 0) for s in range(int(baseline[0]) + 1, int(baseline[1]))]
    if not pre or not buckets:
        return None
    half = statistics.median(pre) / 2
    last = max(buckets)
    for s in range(int(fault_end), last + 1):
        if buckets.get(s, 0) >= half > 0 and (s == last or buckets.get(s + 1, 0) >= half):
            return max(0.0, round(s - fault_end, 1))
    return None


@dataclass
class KindScore:
    kind: str
    expected: str
    records: int = 0
    right: int = 0
    got: Counter[str] = field(default_factory=Counter)  # outcomes that were not expected
    reason_wrong: int = 0  # dead-lettered, but with another reason label
    altered: int = 0  # dead letters whose bytes differ from the request's

    @property
    def wrong(self) -> int:
        return self.records - self.right


def score_hostile(obs: Observed, hostiles: Sequence[Hostile]) -> dict[str, KindScore]:
    keyed = {r.key: po for po, r in obs.requests.items() if r.key is not None}
    scores: dict[str, KindScore] = {}
    for h in hostiles:
        e = expectation(h.kind)
        s = scores.setdefault(h.kind, KindScore(h.kind, str(e)))
        s.records += 1
        po = keyed.get(h.key)
        dead = obs.dead.get(po) if po is not None else None
        rc = obs.first_outcome.get(h.id) if h.id else None
        if po is None:
            label = "not in the topic"
        elif dead and rc:
            label = f"dead letter ({dead.reason}) and {rc.status}"
        elif dead:
            label = f"dead letter ({dead.reason})"
        elif rc:
            label = f"failed {rc.error_code}" if rc.status == "failed" else rc.status
        else:
            label = "no outcome"
        if e.outcome == "dead":
            ok = dead is not None and rc is None
            if ok and dead is not None and e.reasons and dead.reason not in e.reasons:
                s.reason_wrong += 1
        elif e.outcome == "failed":
            ok = (
                dead is None
                and rc is not None
                and rc.status == "failed"
                and rc.error_code == e.code
            )
        else:
            ok = dead is None and rc is not None and rc.status == "sent"
        if dead is not None and po is not None and dead.digest != obs.requests[po].digest:
            s.altered += 1
        if ok:
            s.right += 1
        else:
            s.got[label] += 1
    return scores


@dataclass
class Figures:
    produced: int
    with_outcome: int
    lost: int
    two_carriers: int | None  # ids accepted by two or more carriers (journal)
    lost_reports: int | None  # reports published, never a receipt (journal vs receipts)
    duplicate_receipts: int  # receipts beyond the first per (id, status)
    restarts: int  # worker restarts by the fleet
    deaths: int  # restarts this run did not cause by killing a worker
    zero_outcome_s: int
    recovery_s: float | None
    # requests produced after recovery that failed 30001/30008/39001, by code (None: no
    # fault), and per 1,000 requests before the fault and after recovery (the baseline)
    permanent_after_recovery: dict[str, int] | None
    permanent_per_1k: tuple[float | None, float | None] = (None, None)
    hostile_wrong: int | None = None
    repeats_twice: int | None = None  # repeated ids accepted by two or more carriers
    by_outcome: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    two_carrier_examples: list[str] = field(default_factory=list)
    lost_report_examples: list[str] = field(default_factory=list)
    sent_by_two_carriers: int = 0  # ids whose `sent` receipts name two carriers
    recoveries: list[float | None] = field(default_factory=list)


def figures(
    obs: Observed, gt: GroundTruth | None, faults: Sequence[Fault], restarts: int, kills: int,
) -> Figures:  # fmt: skip
    idents = list(obs.offsets)
    lost = [i for i in idents if not obs.has_outcome(i)]
    by_outcome: Counter[str] = Counter()
    for i in idents:
        rc = obs.first_outcome.get(i) if isinstance(i, str) else None
        if rc is not None:
            by_outcome[rc.status if rc.status == "sent" else f"failed {rc.error_code}"] += 1
        elif obs.has_outcome(i):
            by_outcome["dead letter"] += 1
    buckets = per_second(obs.outcome_ms)
    last_request = max((r.ts for r in obs.requests.values()), default=0)
    recoveries: list[float | None] = []
    recovered_at: float | None = None
    if faults and buckets:
        start = min(buckets) + 0.0
        for f in faults:
            rec = recovery_s(buckets, (start, faults[0].started), f.ended)
            recoveries.append(rec)
        last = faults[-1]
        if recoveries[-1] is not None:
            recovered_at = last.ended + recoveries[-1]
    permanent: dict[str, int] | None = None
    rates: tuple[float | None, float | None] = (None, None)
    if faults:
        permanent = dict.fromkeys(map(str, PERMANENT), 0)
        before = after = failed_before = 0
        for i in idents:
            ts = obs.request_ts(i)
            rc = obs.first_outcome.get(i) if isinstance(i, str) else None
            bad = rc is not None and rc.status == "failed" and rc.error_code in PERMANENT
            if ts is not None and ts < faults[0].started * 1000:
                before += 1
                failed_before += bad
            elif ts is not None and recovered_at is not None and ts >= recovered_at * 1000:
                after += 1
                if bad and rc is not None:
                    permanent[str(rc.error_code)] += 1
        rates = (
            1000 * failed_before / before if before else None,
            1000 * sum(permanent.values()) / after if after else None,
        )
    two: list[str] = []
    lost_reports: list[str] = []
    if gt is not None:
        two = sorted(i for i, cs in gt.accepted.items() if len(cs) >= 2)
        lost_reports = sorted(
            f"{c}/{i}:{st}" for (c, i), st in gt.reports_published.items()
            if (i, st) not in obs.receipt_keys
        )  # fmt: skip
    sent_carriers: dict[str, set[str | None]] = {}
    for rc in obs.receipts:
        if rc.status == "sent":
            sent_carriers.setdefault(rc.id, set()).add(rc.carrier)
    return Figures(
        produced=len(idents),
        with_outcome=len(idents) - len(lost),
        lost=len(lost),
        two_carriers=None if gt is None else len(two),
        lost_reports=None if gt is None else len(lost_reports),
        duplicate_receipts=sum(n - 1 for n in obs.receipt_keys.values()),
        restarts=restarts,
        deaths=max(0, restarts - kills),
        zero_outcome_s=zero_seconds(buckets, last_request // 1000),
        recovery_s=max((r for r in recoveries if r is not None), default=None)
        if recoveries and all(r is not None for r in recoveries)
        else None,
        permanent_after_recovery=permanent,
        permanent_per_1k=rates,
        by_outcome=dict(by_outcome.most_common()),
        lost_examples=[str(i) for i in lost[:10]],
        two_carrier_examples=two[:10],
        lost_report_examples=lost_reports[:10],
        sent_by_two_carriers=sum(1 for cs in sent_carriers.values() if len(cs) >= 2),
        recoveries=recoveries,
    )


# -- producers besides the load ------------------------------------------------------------

KEY_DELIM = "\x1f"
RECORD_DELIM = "\x1e<chaos-record>\x1e"


async def kcat_produce(
    bootstrap: str, topic: str, records: Sequence[Hostile], scratch: Path,
    running: set[asyncio.subprocess.Process],
) -> None:  # fmt: skip
    """Produce with kcat (librdkafka), a client that is not supernet's: one invocation for
    the records with a value, one with -Z for those whose value is null."""
    kcat = shutil.which("kcat")
    if kcat is None:
        raise RuntimeError("kcat is not installed: run deploy/bootstrap.sh")
    for nulls in (False, True):
        batch = [h for h in records if (h.value is None) == nulls]
        if not batch:
            continue
        delim = RECORD_DELIM.encode()
        for h in batch:
            if KEY_DELIM.encode() in h.key or (h.value is not None and delim in h.value):
                raise ValueError(f"{h.kind}: a record contains kcat's delimiter")
        path = scratch / f"kcat-{secrets.token_hex(4)}.bin"
        data = b"".join(h.key + KEY_DELIM.encode() + (h.value or b"") + delim for h in batch)
        await asyncio.to_thread(_write, path, data)
        argv = [kcat, "-P", "-q", "-b", bootstrap, "-t", topic, "-K", KEY_DELIM, "-D",
                RECORD_DELIM, "-X", "message.max.bytes=10000000", "-l", str(path)]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, *(["-Z"] if nulls else []), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        running.add(proc)
        try:
            async with asyncio.timeout(120):
                _, err = await proc.communicate()
        finally:
            running.discard(proc)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await asyncio.to_thread(path.unlink, True)
        if proc.returncode != 0:
            raise RuntimeError(f"kcat failed ({proc.returncode}): {err.decode()[-500:]}")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def numbers_of(plan: NumberPlan, count: int, seed: int) -> tuple[str, ...]:
    """Routable numbers drawn as the load generator draws them; +447911123456 first."""
    traffic = Traffic(plan, Mix(invalid_share=0.0), seed, "n-")
    out = ["+447911123456"]
    while len(out) < count:
        to, stem = traffic.destination()
        if stem is not None and to not in out:
            out.append(to)
    return tuple(out)


async def produce_repeats(
    bootstrap: str, topic: str, plan: NumberPlan, tag: str, ids: int, window: tuple[float, float],
    seed: int,
) -> list[str]:  # fmt: skip
    """``ids`` requests, each produced three times 0.5-5 s apart (the same bytes, as a
    producer retrying), first sends spread over ``window`` (monotonic s); their ids."""
    rnd = random.Random(seed)
    traffic = Traffic(plan, Mix(invalid_share=0.0), seed + 1000, f"{tag}-rep-")
    schedule: list[tuple[float, int]] = []
    for i in range(ids):
        t = rnd.uniform(*window)
        for _ in range(3):
            schedule.append((t, i))
            t += rnd.uniform(0.5, 5.0)
    schedule.sort()
    requests = [traffic.next() for _ in range(ids)]
    encoded: dict[int, bytes] = {}
    partitions = 0
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        partitions = len(await producer.partitions_for(topic))
        pending = []
        for at, i in schedule:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            r = requests[i]
            if i not in encoded:  # the first send stamps created_at; retries repeat it
                created = time.time_ns() // 1_000_000
                encoded[i] = wire.ENCODER.encode(msgspec.structs.replace(r, created_at=created))
            key = r.to.encode()
            pending.append(await producer.send(topic, encoded[i], key=key,
                                               partition=zlib.crc32(key) % partitions))  # fmt: skip
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [r.id for r in requests]


# -- one scenario ------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    infra: InfraSettings
    network: Path
    plan: NumberPlan
    logs: Path
    numbers: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def worker_options(run: Run) -> list[str]:
    """The worker flags this run sets that the worker has today (noted when missing)."""
    have = flags_of("fleet")
    out: list[str] = []
    for flag, value in (("--hold-limit-s", run.args.hold_limit_s),
                        ("--dedupe-window-s", run.args.dedupe_window_s),
                        ("--submit-timeout-s", run.args.submit_timeout_s)):  # fmt: skip
        if value is None:
            continue
        if flag in have:
            out += [flag, str(value)]
        else:
            run.notes.append(f"`supernet fleet` has no {flag} yet: left out")
    return out


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.time()))


async def _started(obs: Observed, limit_s: float = 60) -> float:
    """Wall clock s when the first request of the load was read back."""
    try:
        async with asyncio.timeout(limit_s):
            await obs.started.wait()
    except TimeoutError:
        raise RuntimeError("no request reached Kafka: see the load's log") from None
    assert obs.first_request is not None
    return obs.first_request


async def run_faults(
    name: str, run: Run, procs: Procs, obs: Observed, faults: list[Fault], topic: str,
    scratch: Path, running: set[asyncio.subprocess.Process], extra: dict[str, Any],
) -> None:  # fmt: skip
    a = run.args
    t0 = await _started(obs)
    end = t0 + a.duration
    if name == "worker-kill":
        k = 1
        while t0 + k * a.kill_every < end - 1:
            await _sleep_until(t0 + k * a.kill_every)
            fleet = procs.get("fleet")
            slot = (k - 1) % a.workers
            pid = fleet_workers(fleet.pid).get(slot) if fleet else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                now = time.time()
                faults.append(Fault(name, now, now, f"slot {slot} pid {pid}"))
                console.print(f"  {now - t0:5.1f}s SIGKILL worker slot {slot} (pid {pid})")
            else:
                console.print(f"  {time.time() - t0:5.1f}s worker slot {slot} not running: skipped")
            k += 1
    elif name in BROKER_OF or name == "carriers-restart":
        await _sleep_until(t0 + a.fault_at * a.duration)
        began = time.time()
        if name in BROKER_OF:
            broker = BROKERS[BROKER_OF[name]](run.infra)
            pid = broker.proc.pid()
            if pid is None:
                raise RuntimeError(f"{broker.name} is not running: nothing to kill")
            os.kill(pid, signal.SIGKILL)
            console.print(f"  {began - t0:5.1f}s SIGKILL {broker.name} (pid {pid})")
            await asyncio.sleep(a.down_s)
            await asyncio.to_thread(infra_up, run.infra, [broker.name])
        else:
            pid = procs.kill("carriers")
            console.print(f"  {began - t0:5.1f}s SIGKILL carriers (pid {pid})")
            await asyncio.sleep(a.down_s)
            procs.start("carriers", procs.argv["carriers"])
            await procs.wait_log("carriers", "carriers ready", count=2)
        ended = time.time()
        faults.append(Fault(name, began, ended, f"pid {pid}"))
        console.print(f"  {ended - t0:5.1f}s {name.split('-')[0]} back ({ended - began:.1f}s down)")
    elif name == "hostile":
        ctx = Ctx(f"h{secrets.token_hex(3)}", run.numbers, int(time.time() * 1000))
        records = hostile_records(ctx, a.hostile, a.seed)
        extra["hostile_records"] = records
        chunks = max(1, int((a.duration - 5) / 2))
        for c in range(chunks):
            await _sleep_until(t0 + 2 + c * (a.duration - 5) / chunks)
            await kcat_produce(run.infra.kafka_bootstrap, topic, records[c::chunks], scratch,
                               running)  # fmt: skip
        console.print(f"  kcat produced {len(records):,} hostile records of "
                      f"{len({h.kind for h in records})} kinds")  # fmt: skip
    elif name == "repeats":
        start = time.monotonic() + max(0.0, t0 - time.time())
        extra["repeat_ids"] = await produce_repeats(
            run.infra.kafka_bootstrap, topic, run.plan, f"r{secrets.token_hex(3)}",
            a.repeat_ids, (start + 2, start + max(3.0, a.duration - 12)), a.seed,
        )  # fmt: skip
        console.print(f"  produced {a.repeat_ids:,} ids three times each")


async def keep_loading(
    procs: Procs, first: subprocess.Popen[bytes], argv: Callable[[int, float], list[str]],
    obs: Observed, duration: float,
) -> list[int]:  # fmt: skip
    """Wait for the load; if it dies (no summary: e.g. its producer gave up during a Kafka
    outage) with more than 2 s of the run left, start another for the rest, as a client
    application would be restarted. The exit codes, one per load process."""
    codes = []
    proc = first
    while True:
        codes.append(await asyncio.wait_for(asyncio.to_thread(proc.wait), duration + 300))
        t0 = obs.first_request or time.time()
        left = t0 + duration - time.time()
        summary = procs.logs / f"load-{len(codes) - 1}.json"
        if await asyncio.to_thread(summary.exists) or left < 2:
            return codes
        console.print(f"  load exited ({codes[-1]}) with {left:.0f} s to go: starting another")
        await asyncio.sleep(2)
        proc = procs.start("load", argv(len(codes), max(1.0, left - 2)))


async def run_scenario(name: str, run: Run) -> dict[str, Any]:
    a, s = run.args, run.infra
    tag = f"{name}-{secrets.token_hex(3)}"
    topics = {t: f"chaos.{tag}.{t}" for t in ("requests", "receipts", "dead-letter", "attempts")}
    logs = run.logs / name
    procs = Procs(logs)
    obs = Observed(topics["requests"], topics["receipts"], topics["dead-letter"])
    faults: list[Fault] = []
    extra: dict[str, Any] = {}
    running: set[asyncio.subprocess.Process] = set()
    journal = logs / "journal.jsonl"
    began = time.monotonic()
    await asyncio.to_thread(infra_up, s, ["kafka", "mosquitto"])  # back if a fault left it down
    await kafka.ensure_topics(
        s.kafka_bootstrap,
        [kafka.TopicSpec(topics[t], a.partitions) for t in ("requests", "receipts", "dead-letter")],
    )
    carriers = ["carriers", "--network", str(run.network), "--mqtt-host", s.host,
                "--mqtt-port", str(s.mqtt_port), "--host-id", f"chaos-{tag}",
                "--ledger", str(logs / "ledger.json")]  # fmt: skip
    if "--journal" in flags_of("carriers"):
        carriers += ["--journal", str(journal)]
    elif "`supernet carriers` has no --journal yet" not in run.notes:
        run.notes.append("`supernet carriers` has no --journal yet: no ground truth")
    fleet = ["fleet", "--workers", str(a.workers), "--bootstrap", s.kafka_bootstrap,
             "--mqtt-host", s.host, "--mqtt-port", str(s.mqtt_port), "--network", str(run.network),
             "--requests-topic", topics["requests"], "--receipts-topic", topics["receipts"],
             "--dead-letter-topic", topics["dead-letter"], "--group", f"chaos-{tag}",
             "--dlr-group", f"chaos-{tag}", "--partitions", str(a.partitions),
             "--metrics-port", str(a.metrics_port), "--instance", f"c{tag}",
             "--log-format", "json", *worker_options(run)]  # fmt: skip
    if "--attempts-topic" in flags_of("fleet"):
        fleet += ["--attempts-topic", topics["attempts"]]

    def load(n: int, seconds: float) -> list[str]:
        return supernet(
            "load", "--rate", str(a.rate), "--duration", f"{seconds:.1f}", "--network",
            str(run.network), "--bootstrap", s.kafka_bootstrap, "--requests-topic",
            topics["requests"], "--receipts-topic", topics["receipts"], "--wait-s", "1",
            "--no-progress", "--id-prefix", f"{tag}-{n}-", "--seed", str(a.seed + n),
            "--json", str(logs / f"load-{n}.json"),
        )  # fmt: skip

    console.print(f"[bold]{name}[/]: {a.duration:g} s at {a.rate:g}/s, topics chaos.{tag}.*")
    stop = asyncio.Event()
    loads: list[int] = []
    try:
        procs.start("carriers", supernet(*carriers))
        procs.start("fleet", supernet(*fleet))
        await procs.wait_log("carriers", "carriers ready")
        await procs.wait_log("fleet", "partitions assigned", count=a.workers, limit_s=120)
        read = {topics[t]: a.partitions for t in ("requests", "receipts", "dead-letter")}
        async with TopicReader(s.kafka_bootstrap, read, obs.on_record) as reader:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(reader.follow(stop))
                try:
                    load_proc = procs.start("load", load(0, a.duration))
                    fault = tg.create_task(
                        run_faults(name, run, procs, obs, faults, topics["requests"], logs,
                                   running, extra)
                    )  # fmt: skip
                    loads = await keep_loading(procs, load_proc, load, obs, a.duration)
                    await fault
                    # Until every request has an outcome or none came for a while; then
                    # until the delivery reports stop.
                    idle = (a.submit_timeout_s or 10.0) + 5
                    settled = await until_idle(obs.progress, lambda: not obs.open, idle, a.settle_s)
                    if not settled:
                        extra["open_at_bound"] = len(obs.open)
                        run.notes.append(
                            f"{name}: outcomes were still arriving when --settle-s "
                            f"{a.settle_s:g} ran out ({len(obs.open):,} open): its lost "
                            "count includes requests that were late, not only lost"
                        )
                    await reader.quiet(4, a.settle_s)
                    await asyncio.to_thread(procs.stop, {"carriers"})  # the journal is complete
                    await reader.quiet(3, 15)  # the last reports become receipts
                    await asyncio.to_thread(procs.stop, {"fleet"}, 60)
                finally:
                    stop.set()
            if not await reader.catch_up():
                run.notes.append(f"{name}: could not read the topics to their end")
    finally:
        for proc in list(running):
            if proc.returncode is None:
                proc.kill()
        await asyncio.to_thread(procs.stop)
    fleet_log = procs.log("fleet")
    restarts = fleet_log.count(RESTARTING)
    kills = sum(1 for f in faults if f.kind == "worker-kill")
    gt = ground_truth([journal])
    fig = figures(obs, gt, faults, restarts, kills)
    details: dict[str, Any] = {}
    if "hostile_records" in extra:
        scores = score_hostile(obs, extra["hostile_records"])
        fig.hostile_wrong = sum(x.wrong for x in scores.values())
        details["hostile"] = {k: dataclasses.asdict(v) | {"wrong": v.wrong}
                              for k, v in sorted(scores.items())}  # fmt: skip
    if "repeat_ids" in extra:
        details["repeats"] = repeats_details(obs, gt, extra["repeat_ids"])
        fig.repeats_twice = details["repeats"]["accepted_by_two_or_more"]
    summaries = [logs / f"load-{n}.json" for n in range(len(loads))]
    return {
        "scenario": name,
        "seconds": round(time.monotonic() - began, 1),
        "figures": dataclasses.asdict(fig),
        "faults": [dataclasses.asdict(f) for f in faults],
        "worker_kills": kills,
        "load_exit_codes": loads,
        "open_at_settle_bound": extra.get("open_at_bound"),
        "outcomes_per_s": series(obs),
        "load": [json.loads(p.read_text()) if p.exists() else None for p in summaries],
        "ground_truth": gt is not None,
        "journal": journal_details(gt),
        "logs": str(logs),
        **details,
    }


def series(obs: Observed) -> dict[str, Any]:
    """Outcomes per second from the first outcome on, with that second (Unix s)."""
    buckets = per_second(obs.outcome_ms)
    if not buckets:
        return {"from_s": None, "counts": []}
    first = min(buckets)
    return {"from_s": first, "counts": [buckets.get(s, 0) for s in range(first, max(buckets) + 1)]}


def journal_details(gt: GroundTruth | None) -> dict[str, Any] | None:
    """What else the journal knows (fields of carriers.journal beyond the protocol)."""
    if gt is None:
        return None
    due: Mapping[tuple[str, str], str] = getattr(gt, "reports_due", {})
    return {
        "accepted": len(gt.accepted),
        "reports_published": len(gt.reports_published),
        "reports_acked": len(gt.reports_acked),
        "reports_due_never_published": sum(1 for k in due if k not in gt.reports_published),
        "published_never_acked": sum(1 for k in gt.reports_published if k not in gt.reports_acked),
        "accepted_twice_by_one_carrier": len(getattr(gt, "accepted_twice", ())),
        "reports_dropped": len(getattr(gt, "reports_dropped", ())),
        "starts": getattr(gt, "starts", None),
        "damaged_bytes": getattr(gt, "damaged_bytes", None),
    }


def repeats_details(obs: Observed, gt: GroundTruth | None, ids: Sequence[str]) -> dict[str, Any]:
    sent: dict[str, set[str | None]] = {}
    for rc in obs.receipts:
        if rc.status == "sent":
            sent.setdefault(rc.id, set()).add(rc.carrier)
    twice = None
    if gt is not None:
        same = {i for _, i in getattr(gt, "accepted_twice", ())}  # one carrier, twice
        twice = sum(1 for i in ids if len(gt.accepted.get(i, ())) >= 2 or i in same)
    return {
        "ids": len(ids),
        "with_outcome": sum(1 for i in ids if obs.has_outcome(i)),
        "records_read": sum(len(obs.offsets.get(i, ())) for i in ids),
        "accepted_by_two_or_more": twice,
        "sent_by_two_or_more_carriers": sum(1 for i in ids if len(sent.get(i, ())) >= 2),
        "sent_receipts_beyond_first": sum(max(0, obs.receipt_keys[i, "sent"] - 1) for i in ids),
    }


# -- the table -----------------------------------------------------------------------------

Check = Callable[[str, Any, argparse.Namespace], bool | None]  # None: no target there


def _zero(v: Any) -> bool:
    return bool(v == 0)


COLUMNS: tuple[tuple[str, str, str, Check], ...] = (
    # header, figure, target text, check
    ("produced", "produced", "", lambda n, v, a: None),
    ("outcome", "with_outcome", "", lambda n, v, a: None),
    ("lost", "lost", "0", lambda n, v, a: _zero(v)),
    ("2+ carriers", "two_carriers", "0", lambda n, v, a: None if v is None else _zero(v)),
    ("lost reports", "lost_reports", "0", lambda n, v, a: None if v is None else _zero(v)),
    ("dup receipts", "duplicate_receipts", "", lambda n, v, a: None),
    ("restarts", "restarts", "", lambda n, v, a: None),
    ("deaths", "deaths", "0 (hostile)", lambda n, v, a: _zero(v) if n == "hostile" else None),
    ("zero-out s", "zero_outcome_s", "<=10% (kill)",
     lambda n, v, a: v <= 0.1 * a.duration if n == "worker-kill" else None),
    ("recovery s", "recovery_s", "", lambda n, v, a: None),
    ("3000x/1k", "permanent_per_1k", "", lambda n, v, a: None),
    ("hostile bad", "hostile_wrong", "0", lambda n, v, a: None if v is None else _zero(v)),
    ("repeats twice", "repeats_twice", "0", lambda n, v, a: None if v is None else _zero(v)),
)  # fmt: skip


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple | list):
        return ">".join("-" if x is None else f"{x:.1f}" for x in v) if any(
            x is not None for x in v) else "-"  # fmt: skip
    if isinstance(v, dict):
        return "/".join(str(v[k]) for k in sorted(v)) if v else "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def verdicts(result: dict[str, Any], args: argparse.Namespace) -> dict[str, bool]:
    fig = result.get("figures") or {}
    out: dict[str, bool] = {}
    for header, key, _, check in COLUMNS:
        ok = check(result["scenario"], fig.get(key), args) if key in fig else None
        if ok is not None:
            out[header] = ok
    return out


def render(results: Sequence[dict[str, Any]], args: argparse.Namespace) -> Table:
    t = Table(
        title=f"chaos: {args.duration:g} s per scenario at {args.rate:g} requests/s "
        f"({args.workers} workers); 3000x: failed 30001/30008/39001 per 1,000 requests "
        "produced before the fault > after recovery"
    )
    t.add_column("scenario", no_wrap=True)
    for header, *_ in COLUMNS:
        t.add_column(header, justify="right")
    t.add_row("target", *(target for _, _, target, _ in COLUMNS), style="dim")
    for r in results:
        if "error" in r:
            t.add_row(r["scenario"], "[red]error[/] (below)")
            continue
        fig, marks = r["figures"], verdicts(r, args)
        cells = []
        for header, key, _, _ in COLUMNS:
            cell = _cell(fig.get(key))
            if header in marks:
                cell += " [green]PASS[/]" if marks[header] else " [red]SHORT[/]"
            cells.append(cell)
        t.add_row(r["scenario"], *cells)
    return t


def render_hostile(result: dict[str, Any]) -> Table | str | None:
    kinds: dict[str, dict[str, Any]] = result.get("hostile") or {}
    bad = {k: v for k, v in kinds.items() if v["wrong"] or v["reason_wrong"] or v["altered"]}
    records = sum(v["records"] for v in kinds.values())
    title = (f"hostile: {records:,} records of {len(kinds)} kinds; "
             f"{len(bad)} kinds not as expected")  # fmt: skip
    if not kinds or not bad:
        return title if kinds else None
    t = Table(title=title)
    for col in ("kind", "expected", "records", "wrong", "got instead", "other reason", "altered"):
        t.add_column(col, justify="left" if col in ("kind", "expected", "got instead") else "right")
    for k, v in bad.items():
        got = ", ".join(f"{label} x{n}" for label, n in Counter(v["got"]).most_common(3))
        t.add_row(k, v["expected"], str(v["records"]), str(v["wrong"]), got,
                  str(v["reason_wrong"]), str(v["altered"]))  # fmt: skip
    return t


# -- main --------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, settings: InfraSettings, out: list[dict[str, Any]],
                  notes: list[str]) -> None:  # fmt: skip
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    network = await asyncio.to_thread(network_dir, args.state_dir, args.network)
    console.print(f"network {network}; building the traffic plan")
    plan = await asyncio.to_thread(build_plan, network, args.seed)
    logs = args.state_dir / "logs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    client_log = logging.FileHandler(logs / "kafka-client.log")  # reconnect noise
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).addHandler(client_log)
        logging.getLogger(name).propagate = False
    run = Run(args, settings, network, plan, logs, numbers_of(plan, 64, args.seed), notes)
    for name in args.scenarios:
        try:
            result = await run_scenario(name, run)
        except Exception as e:  # one scenario's failure is reported; the others still run
            console.print(f"[red]{name} failed:[/] {e!r}")
            result = {"scenario": name, "error": repr(e)[:300]}
        out.append(result)
        if "figures" in result:
            f = result["figures"]
            console.print(f"  {name}: {f['produced']:,} produced, {f['lost']:,} lost, "
                          f"{f['restarts']} restarts, {result['seconds']:.0f} s")  # fmt: skip
    console.print(f"logs in {logs}")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, in order (default all: {','.join(SCENARIOS)})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --duration 20 --kill-every 5 --down-s 5 --hostile 2000 "
        "--repeat-ids 200 --settle-s 30 (flags given still win)",
    )
    p.add_argument("--duration", type=float, help="seconds of load per scenario (default 120)")
    p.add_argument("--rate", type=float, default=750.0, help="requests/s of load (default 750)")
    p.add_argument("--workers", type=int, default=2, help="workers in the fleet (default 2)")
    p.add_argument("--kill-every", type=float, help="worker-kill: seconds between kills (10)")
    p.add_argument(
        "--fault-at",
        type=float,
        default=1 / 3,
        help="restart scenarios: kill at this share of the run (default 1/3)",
    )
    p.add_argument(
        "--down-s", type=float, help="seconds a killed broker or carrier stays down (10)"
    )
    p.add_argument("--hostile", type=int, help="hostile records (default 10,000)")
    p.add_argument("--repeat-ids", type=int, help="ids produced three times (default 1,000)")
    p.add_argument(
        "--settle-s",
        type=float,
        help="after the load, wait at most this long for outcomes, and again for "
        "delivery reports (default 40: 30 s + the submit timeout)",
    )
    p.add_argument("--submit-timeout-s", type=float, help="passed to the workers (their default)")
    p.add_argument("--hold-limit-s", type=float, help="passed to the workers if they have it")
    p.add_argument("--dedupe-window-s", type=float, help="passed to the workers if they have it")
    p.add_argument("--partitions", type=int, default=12, help="partitions per topic (12)")
    p.add_argument(
        "--network",
        type=Path,
        help="network directory (default: seed 1, generated once under the state dir)",
    )
    p.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
    p.add_argument("--kafka-port", type=int, default=39192)
    p.add_argument("--kafka-controller-port", type=int, default=39193)
    p.add_argument("--mqtt-port", type=int, default=39883)
    p.add_argument(
        "--prometheus-port",
        type=int,
        default=39190,
        help="kept off others' ports; Prometheus is not started (default 39190)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=39500,
        help="first worker's /metrics port; worker i uses +i (default 39500)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=CHAOS_DIR,
        help=f"brokers' state, the network and logs (default {CHAOS_DIR})",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/chaos/chaos.json"),
        help="JSON with every scenario's figures (default out/chaos/chaos.json)",
    )
    p.add_argument("--keep", action="store_true", help="leave the brokers running at the end")
    args = p.parse_args(argv)
    quick = {"duration": 20.0, "kill_every": 5.0, "down_s": 5.0, "hostile": 2000,
             "repeat_ids": 200, "settle_s": 30.0}  # fmt: skip
    full = {"duration": 120.0, "kill_every": 10.0, "down_s": 10.0, "hostile": 10_000,
            "repeat_ids": 1000, "settle_s": 40.0}  # fmt: skip
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.state_dir = args.state_dir.resolve()
    return args


def main() -> int:
    args = parse()
    settings = InfraSettings(
        host="127.0.0.1", kafka_port=args.kafka_port,
        kafka_controller_port=args.kafka_controller_port, mqtt_port=args.mqtt_port,
        prometheus_port=args.prometheus_port, state_dir=args.state_dir,
    )  # fmt: skip
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    interrupted = False
    console.print(f"brokers: Kafka {settings.kafka_bootstrap}, MQTT {settings.mqtt_url}, "
                  f"state {settings.state_dir}")  # fmt: skip
    try:
        infra_up(settings, ["kafka", "mosquitto"])
        uvloop.run(run_all(args, settings, results, notes))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        console.print("[yellow]interrupted: stopping everything[/]")
    finally:
        if not args.keep:
            infra.down(settings, ["kafka", "mosquitto"])
    seconds = time.monotonic() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({
        "config": config, "seconds": round(seconds, 1), "cores": os.cpu_count(),
        "interrupted": interrupted, "notes": list(dict.fromkeys(notes)),
        "targets": {h: t for h, _, t, _ in COLUMNS if t}, "scenarios": results,
    }, indent=1, default=str) + "\n")  # fmt: skip
    console.print(render(results, args))
    for r in results:
        hostile = render_hostile(r)
        if hostile is not None:
            console.print(hostile)
    for r in results:
        if "error" in r:
            console.print(f"[red]{r['scenario']} failed:[/] {r['error']}")
    for note in dict.fromkeys(notes):
        console.print(f"note: {note}")
    marks = [(r["scenario"], h, ok) for r in results for h, ok in verdicts(r, args).items()]
    short = [f"{s} {h}" for s, h, ok in marks if not ok]
    console.print(f"{len(marks) - len(short)} of {len(marks)} targets met"
                  + (f"; SHORT: {', '.join(short)}" if short else ""))  # fmt: skip
    console.print(f"{os.cpu_count()} cores shared by brokers, carriers, workers and load; "
                  f"total time {seconds:,.0f} s")  # fmt: skip
    console.print(f"wrote {args.out}")
    return 130 if interrupted else (1 if short else 0)


if __name__ == "__main__":
    sys.exit(main())
