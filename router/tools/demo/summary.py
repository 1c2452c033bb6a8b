"""The demo's figures, from the run's requests and receipts alone (pure: no I/O, no clock).

Input: every request the run produced (id -> ``created_at``, ms), every receipt read
from the receipts topic over the run (other runs' ids included: they are counted as
foreign and left out), the scheduled outage as the carriers applied it, and optionally
the economics run's results per policy. Output: plain figures for the table, the JSON
file and the plots; nothing here is estimated or filled in.

Receipts are at-least-once: per ``(id, status)`` the earliest receipt counts (ties: the
first read). A request's outcome is its earliest ``sent`` or ``failed`` receipt; its
delivery, its earliest ``delivered`` or ``undelivered`` one. Latencies are receipt ``ts``
minus request ``created_at``, in milliseconds, nearest-rank percentiles.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Final, Protocol

from router.contracts.codes import Code, Scope, meaning
from router.contracts.wire import Receipt
from router.tools.load.report import Latency, percentile

OUTCOMES: Final = ("sent", "failed")
DELIVERIES: Final = ("delivered", "undelivered")
STATUSES: Final = (*OUTCOMES, *DELIVERIES)
# Refusals of the routing core before any carrier is tried: the request has no route.
# The economics run counts the same requests as not routed.
NO_ROUTE_CODES: Final = frozenset(
    {
        Code.INVALID_DESTINATION,
        Code.EMPTY_BODY,
        Code.NO_ROUTE,
        Code.BODY_TOO_LONG,
        Code.NO_ROUTE_WITHIN_PRICE,
    }
)
FAILED_TO: Final = "(failed)"  # where a failover chain ends when no carrier took it
OTHER: Final = "other"


class PolicyFigures(Protocol):
    """What the demo reads from ``router.tools.economics.PolicyResult``."""

    @property
    def name(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def routed(self) -> int: ...
    @property
    def sent(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    @property
    def delivery_rate(self) -> float: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def cost_per_delivered_usd(self) -> float: ...
    @property
    def failovers(self) -> int: ...
    @property
    def aggregator_share(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Outage:
    """When the busy carrier was offline, as wall-clock ms (end None: until the end)."""

    carrier: str
    start_ms: int
    end_ms: int | None = None

    def contains(self, ts: int) -> bool:
        return self.start_ms <= ts and (self.end_ms is None or ts < self.end_ms)


# -- collation ------------------------------------------------------------------------


@dataclass(slots=True)
class Collated:
    """The run's receipts, deduplicated: per id, the earliest receipt of each status."""

    created: Mapping[str, int]
    first: dict[str, dict[str, Receipt]] = field(default_factory=dict)
    read: int = 0  # receipts of this run's ids, duplicates included
    duplicates: int = 0
    foreign: int = 0  # receipts of ids this run did not produce

    def outcome(self, id: str) -> Receipt | None:
        by_status = self.first.get(id)
        if not by_status:
            return None
        found = [by_status[s] for s in OUTCOMES if s in by_status]
        return min(found, key=lambda r: r.ts) if found else None

    def delivery(self, id: str) -> Receipt | None:
        by_status = self.first.get(id)
        if not by_status:
            return None
        found = [by_status[s] for s in DELIVERIES if s in by_status]
        return min(found, key=lambda r: r.ts) if found else None

    def outcomes(self) -> list[Receipt]:
        """Every request's outcome receipt, in id order."""
        return [r for r in (self.outcome(i) for i in sorted(self.first)) if r is not None]

    def deliveries(self) -> list[Receipt]:
        return [r for r in (self.delivery(i) for i in sorted(self.first)) if r is not None]


def collate(created: Mapping[str, int], receipts: Iterable[Receipt]) -> Collated:
    c = Collated(created)
    for r in receipts:
        if r.id not in created:
            c.foreign += 1
            continue
        c.read += 1
        by_status = c.first.setdefault(r.id, {})
        earlier = by_status.get(r.status)
        if earlier is not None:
            c.duplicates += 1
            if r.ts >= earlier.ts:
                continue
        by_status[r.status] = r
    return c


# -- figures --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeCount:
    status: str
    code: int
    count: int  # distinct requests
    meaning: str


@dataclass(frozen=True, slots=True)
class Move:
    """Messages that a carrier's failure moved on to another carrier (or to failure)."""

    from_carrier: str
    to_carrier: str
    count: int


@dataclass(frozen=True, slots=True)
class Failovers:
    messages: int  # requests whose outcome lists at least one failed attempt
    attempts: int  # failed attempts over all requests
    by_code: list[CodeCount]
    moves: list[Move]  # most frequent first
    before_outage: int  # failed attempts by the time of the outcome, around the outage
    during_outage: int
    after_outage: int
    from_outage_carrier: int  # failed attempts on the carrier that went offline


@dataclass(frozen=True, slots=True)
class OutageFigures:
    carrier: str
    start_s: float  # seconds after the first request was created
    end_s: float | None
    share_before: float  # the carrier's share of sent messages before the outage
    share_during: float
    share_after: float | None  # None when the outage lasted until the end
    taken_over_by: list[tuple[str, float]]  # carriers whose share rose most, with the rise


@dataclass(frozen=True, slots=True)
class PolicyRow:
    name: str
    source: str  # "economics" (simulated, ground truth) or "live" (this run's receipts)
    requests: int
    delivery_rate: float | None  # delivered / routed
    cost_per_delivered_usd: float | None
    failovers: int
    aggregator_share: float | None


@dataclass(frozen=True, slots=True)
class DemoSummary:
    requests: int
    with_outcome: int
    without_outcome: int
    by_status: dict[str, int]  # distinct requests per status
    routed: int  # requests not refused by the routing core for want of a route
    delivered: int
    delivery_rate: float | None  # delivered / routed
    delivery_rate_all: float | None  # delivered / requests
    reported: int  # sent requests with a delivery receipt (delivered or undelivered)
    reported_delivery_rate: float | None  # delivered / reported
    sent_without_report: int  # reports can be lost, as on real networks
    outcomes: list[CodeCount]  # failed and undelivered, by code
    latency_sent: Latency
    latency_delivered: Latency
    first_created_ms: int | None
    last_created_ms: int | None
    last_outcome_ms: int | None
    offered_per_second: float | None  # requests over their created_at span
    outcomes_per_second: float | None  # outcomes / (last outcome ts - first created_at)
    cost_usd: float  # price of every sent message (price per segment x segments)
    cost_per_delivered_usd: float | None
    aggregator_share: float | None  # share of sent messages on aggregators
    top_carriers: list[tuple[str, int]]  # sent messages per carrier, most first
    failovers: Failovers
    outage: OutageFigures | None
    policies: list[PolicyRow]
    receipts_read: int
    duplicates: int
    foreign: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _shares(receipts: Iterable[Receipt]) -> dict[str, float]:
    counts = Counter(r.carrier or "" for r in receipts)
    total = sum(counts.values())
    return {c: n / total for c, n in counts.items()} if total else {}


def _failovers(outcomes: Sequence[Receipt], outage: Outage | None) -> Failovers:
    codes: Counter[tuple[str, int]] = Counter()
    moves: Counter[tuple[str, str]] = Counter()
    windows = Counter[str]()
    messages = attempts = from_outage = 0
    for r in outcomes:
        if not r.failovers:
            continue
        messages += 1
        chain = sorted(r.failovers, key=lambda f: f.attempt)
        attempts += len(chain)
        ends = r.carrier if r.status == "sent" and r.carrier else FAILED_TO
        for i, f in enumerate(chain):
            codes[("failed attempt", f.code)] += 1
            to = chain[i + 1].carrier if i + 1 < len(chain) else ends
            moves[(f.carrier, to)] += 1
            if outage is not None and f.carrier == outage.carrier:
                from_outage += 1
        if outage is not None:
            if r.ts < outage.start_ms:
                windows["before"] += len(chain)
            elif outage.contains(r.ts):
                windows["during"] += len(chain)
            else:
                windows["after"] += len(chain)
    return Failovers(
        messages=messages,
        attempts=attempts,
        by_code=[
            CodeCount(s, code, n, meaning(Scope.REJECTED, code))
            for (s, code), n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        moves=[
            Move(a, b, n) for (a, b), n in sorted(moves.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        before_outage=windows["before"],
        during_outage=windows["during"],
        after_outage=windows["after"],
        from_outage_carrier=from_outage,
    )


def _outage(sent: Sequence[Receipt], outage: Outage, first_created: int) -> OutageFigures:
    before = [r for r in sent if r.ts < outage.start_ms]
    during = [r for r in sent if outage.contains(r.ts)]
    after = [r for r in sent if r.ts >= outage.end_ms] if outage.end_ms is not None else None
    s_before, s_during = _shares(before), _shares(during)
    rises = sorted(
        ((c, s_during[c] - s_before.get(c, 0.0)) for c in s_during if c != outage.carrier),
        key=lambda kv: (-kv[1], kv[0]),
    )
    return OutageFigures(
        carrier=outage.carrier,
        start_s=(outage.start_ms - first_created) / 1000.0,
        end_s=None if outage.end_ms is None else (outage.end_ms - first_created) / 1000.0,
        share_before=s_before.get(outage.carrier, 0.0),
        share_during=s_during.get(outage.carrier, 0.0),
        share_after=None if after is None else _shares(after).get(outage.carrier, 0.0),
        taken_over_by=[(c, rise) for c, rise in rises[:3] if rise > 0],
    )


def summarize(
    created: Mapping[str, int],
    receipts: Iterable[Receipt],
    outage: Outage | None = None,
    policies: Sequence[PolicyFigures] = (),
) -> DemoSummary:
    """Every figure of the demo from the run's requests and the receipts read."""
    c = collate(created, receipts)
    outcomes = c.outcomes()
    deliveries = c.deliveries()
    by_status = {s: sum(1 for b in c.first.values() if s in b) for s in STATUSES}
    sent = [r for r in outcomes if r.status == "sent"]
    sent_ids = {r.id for r in sent}
    refused = sum(
        1
        for r in outcomes
        if r.status == "failed" and r.attempt == 0 and r.error_code in NO_ROUTE_CODES
    )
    routed = len(created) - refused
    delivered = sum(1 for r in deliveries if r.status == "delivered")
    reported = sum(1 for r in deliveries if r.id in sent_ids)
    codes: Counter[tuple[str, int]] = Counter()
    for r in (*outcomes, *deliveries):
        if r.status in ("failed", "undelivered") and r.error_code is not None:
            codes[(r.status, r.error_code)] += 1
    lat_sent = [float(r.ts - created[r.id]) for r in sent]
    lat_delivered = [float(r.ts - created[r.id]) for r in deliveries if r.status == "delivered"]
    first_created = min(created.values()) if created else None
    last_created = max(created.values()) if created else None
    last_outcome = max((r.ts for r in outcomes), default=None)
    offered = None
    if first_created is not None and last_created is not None and last_created > first_created:
        offered = len(created) / ((last_created - first_created) / 1000.0)
    throughput = None
    if first_created is not None and last_outcome is not None:
        throughput = len(outcomes) / (max(1, last_outcome - first_created) / 1000.0)
    cost = sum(r.price or 0.0 for r in sent)
    carriers = Counter(r.carrier or "" for r in sent)
    aggregators = sum(1 for r in sent if r.route == "aggregator")
    failovers = _failovers(outcomes, outage)
    rows = [
        PolicyRow(
            p.name,
            "economics",
            p.requests,
            p.delivery_rate,
            p.cost_per_delivered_usd,
            p.failovers,
            p.aggregator_share,
        )
        for p in policies
    ]
    rows.append(
        PolicyRow(
            "supernet (this run)",
            "live",
            len(created),
            _rate(delivered, routed),
            cost / delivered if delivered else None,
            failovers.attempts,
            _rate(aggregators, len(sent)),
        )
    )
    return DemoSummary(
        requests=len(created),
        with_outcome=len(outcomes),
        without_outcome=len(created) - len(outcomes),
        by_status=by_status,
        routed=routed,
        delivered=delivered,
        delivery_rate=_rate(delivered, routed),
        delivery_rate_all=_rate(delivered, len(created)),
        reported=reported,
        reported_delivery_rate=_rate(delivered, len(deliveries)),
        sent_without_report=len(sent) - reported,
        outcomes=[
            CodeCount(s, code, n, meaning(s, code))
            for (s, code), n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        latency_sent=Latency.of(lat_sent),
        latency_delivered=Latency.of(lat_delivered),
        first_created_ms=first_created,
        last_created_ms=last_created,
        last_outcome_ms=last_outcome,
        offered_per_second=offered,
        outcomes_per_second=throughput,
        cost_usd=cost,
        cost_per_delivered_usd=cost / delivered if delivered else None,
        aggregator_share=_rate(aggregators, len(sent)),
        top_carriers=sorted(carriers.items(), key=lambda kv: (-kv[1], kv[0])),
        failovers=failovers,
        outage=None
        if outage is None or first_created is None
        else _outage(sent, outage, first_created),
        policies=rows,
        receipts_read=c.read,
        duplicates=c.duplicates,
        foreign=c.foreign,
    )


# -- time series for the plots ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareSeries:
    """Sent messages per carrier per time bin: ``counts[carrier][bin]``."""

    seconds: list[float]  # start of each bin, seconds after ``origin_ms``
    carriers: list[str]  # the top carriers by volume, then ``OTHER`` if any remain
    counts: dict[str, list[int]]


def share_series(c: Collated, origin_ms: int, bin_s: float = 1.0, top: int = 6) -> ShareSeries:
    sent = [r for r in c.outcomes() if r.status == "sent"]
    if not sent:
        return ShareSeries([], [], {})
    width = bin_s * 1000.0
    bins = int((max(r.ts for r in sent) - origin_ms) // width) + 1
    volume = Counter(r.carrier or "" for r in sent)
    named = [cid for cid, _ in sorted(volume.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    names = named + ([OTHER] if len(volume) > len(named) else [])
    counts = {n: [0] * bins for n in names}
    for r in sent:
        i = int((r.ts - origin_ms) // width)
        if 0 <= i < bins:
            counts[r.carrier if r.carrier in counts else OTHER][i] += 1
    return ShareSeries([i * bin_s for i in range(bins)], names, counts)


@dataclass(frozen=True, slots=True)
class LatencySeries:
    """Request -> sent latency percentiles of the requests created in each bin."""

    seconds: list[float]
    p50_ms: list[float]
    p99_ms: list[float]
    count: list[int]


def latency_series(c: Collated, origin_ms: int, bin_s: float = 1.0) -> LatencySeries:
    by_bin: dict[int, list[float]] = defaultdict(list)
    width = bin_s * 1000.0
    for r in c.outcomes():
        if r.status == "sent":
            created = c.created[r.id]
            by_bin[int((created - origin_ms) // width)].append(float(r.ts - created))
    out = LatencySeries([], [], [], [])
    for i in sorted(by_bin):
        values = sorted(by_bin[i])
        out.seconds.append(i * bin_s)
        out.p50_ms.append(percentile(values, 50) or 0.0)
        out.p99_ms.append(percentile(values, 99) or 0.0)
        out.count.append(len(values))
    return out
