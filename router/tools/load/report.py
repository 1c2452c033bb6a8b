"""Outcomes and latencies from receipts (pure: no I/O, no clock).

``Tally.expect`` registers each produced request (its id and ``created_at``); ``add``
takes receipts, deduplicated by ``(id, status)`` as the contract asks, and ignores ids
of other runs. ``summary`` turns the tally into plain figures for the table and JSON.
Latencies are receipt ``ts`` minus request ``created_at``, in milliseconds. Two more split
the engine's own time from the carrier's, for ``sent`` receipts: request -> submitted
(the receipt's ``submitted_ts`` minus ``created_at``) and carrier accept -> durable (the
broker's append time of the receipt record, given only when the receipts topic stamps
``LogAppendTime``, minus the receipt's ``ts``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from router.contracts.wire import Receipt

OUTCOMES = frozenset({"sent", "failed"})


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values; None if empty."""
    if not sorted_values:
        return None
    if q <= 0:
        return sorted_values[0]
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        s = sorted(values)
        return cls(
            len(s), percentile(s, 50), percentile(s, 90), percentile(s, 99), s[-1] if s else None
        )


@dataclass(frozen=True, slots=True)
class Summary:
    produced: int
    produce_seconds: float
    produce_rate: float  # records per second, produced and acknowledged
    target_rate: float
    with_outcome: int
    without_outcome: int
    sent_without_delivery: int  # sent, but no delivered/undelivered yet
    by_status: dict[str, int]  # distinct ids per status
    by_error: dict[str, int]  # "failed 21211" -> ids
    latency_sent: Latency
    latency_delivered: Latency
    latency_submitted: Latency  # request -> submitted to the carrier (sent receipts)
    latency_durable: Latency  # carrier accept -> sent receipt appended by the broker
    outcomes_per_second: float | None  # outcomes / (last outcome ts - first outcome ts)
    receipts: int  # receipts read for this run's ids, duplicates included
    duplicates: int
    foreign: int  # receipts for ids this run did not produce
    undecodable: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(slots=True)
class Tally:
    created: dict[str, int] = field(default_factory=dict)  # id -> created_at (ms)
    seen: set[tuple[str, str]] = field(default_factory=set)
    outcome: dict[str, str] = field(default_factory=dict)  # id -> first outcome status
    delivery: dict[str, str] = field(default_factory=dict)  # id -> first delivery status
    status_ids: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency_sent: list[float] = field(default_factory=list)
    latency_delivered: list[float] = field(default_factory=list)
    latency_submitted: list[float] = field(default_factory=list)
    latency_durable: list[float] = field(default_factory=list)
    first_created: int | None = None
    first_outcome_ts: int | None = None
    last_outcome_ts: int | None = None
    sent_count: int = 0  # ids whose outcome is "sent"
    sent_reported: int = 0  # of those, ids with a delivery receipt too
    receipts: int = 0
    duplicates: int = 0
    foreign: int = 0
    undecodable: int = 0

    def expect(self, id: str, created_at: int) -> None:
        self.created[id] = created_at
        if self.first_created is None or created_at < self.first_created:
            self.first_created = created_at

    def add(self, r: Receipt, appended_ms: int | None = None) -> bool:
        """Count one receipt; False for a duplicate or another run's id. ``appended_ms``:
        when the broker appended its record (LogAppendTime), if known."""
        created = self.created.get(r.id)
        if created is None:
            self.foreign += 1
            return False
        self.receipts += 1
        key = (r.id, r.status)
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        self.status_ids[r.status] += 1
        if r.error_code is not None and r.status in ("failed", "undelivered"):
            self.errors[f"{r.status} {r.error_code}"] += 1
        if r.status in OUTCOMES:
            if r.id not in self.outcome:
                self.outcome[r.id] = r.status
                if r.status == "sent":
                    self.sent_count += 1
                    self.sent_reported += r.id in self.delivery
            if r.status == "sent":
                self.latency_sent.append(float(r.ts - created))
                if r.submitted_ts is not None:
                    self.latency_submitted.append(float(r.submitted_ts - created))
                if appended_ms is not None:
                    self.latency_durable.append(float(appended_ms - r.ts))
            if self.last_outcome_ts is None or r.ts > self.last_outcome_ts:
                self.last_outcome_ts = r.ts
            if self.first_outcome_ts is None or r.ts < self.first_outcome_ts:
                self.first_outcome_ts = r.ts
        else:
            if r.id not in self.delivery:
                self.delivery[r.id] = r.status
                self.sent_reported += self.outcome.get(r.id) == "sent"
            if r.status == "delivered":
                self.latency_delivered.append(float(r.ts - created))
        return True

    @property
    def missing_outcomes(self) -> int:
        return len(self.created) - len(self.outcome)

    @property
    def awaiting_delivery(self) -> int:
        """Ids with a ``sent`` outcome and no delivery receipt yet."""
        return self.sent_count - self.sent_reported

    def summary(self, produce_seconds: float, target_rate: float) -> Summary:
        produced = len(self.created)
        span = None
        if self.last_outcome_ts is not None and self.first_outcome_ts is not None:
            # From the first outcome, not the first request: the latency before it is no
            # lack of throughput (from the first request, a 4-s step with 0.4 s of latency
            # would show 90% of the offered rate at any load).
            span = max(1, self.last_outcome_ts - self.first_outcome_ts) / 1000.0
        return Summary(
            produced=produced,
            produce_seconds=produce_seconds,
            produce_rate=produced / produce_seconds if produce_seconds > 0 else 0.0,
            target_rate=target_rate,
            with_outcome=len(self.outcome),
            without_outcome=self.missing_outcomes,
            sent_without_delivery=self.awaiting_delivery,
            by_status=dict(sorted(self.status_ids.items())),
            by_error=dict(sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))),
            latency_sent=Latency.of(self.latency_sent),
            latency_delivered=Latency.of(self.latency_delivered),
            latency_submitted=Latency.of(self.latency_submitted),
            latency_durable=Latency.of(self.latency_durable),
            outcomes_per_second=len(self.outcome) / span if span else None,
            receipts=self.receipts,
            duplicates=self.duplicates,
            foreign=self.foreign,
            undecodable=self.undecodable,
        )
