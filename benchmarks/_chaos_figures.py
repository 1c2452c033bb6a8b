"""The chaos benchmark's figures, pure functions of what came back: the run's requests,
receipts and dead letters as read from Kafka (`Observed`), the carriers' journal (their
ground truth) and the faults' times; the hostile mix scored kind by kind."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from benchmarks._chaos_hostile import Hostile, expectation
from benchmarks._harness import Rec
from router.contracts import wire
from router.contracts.codes import Code

PERMANENT = (
    Code.CARRIERS_UNAVAILABLE,
    Code.UNKNOWN_ERROR,
    Code.QUEUE_OVERFLOW,
)  # codes that must not outlast a fault

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


# -- details for the JSON --------------------------------------------------------------------


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
