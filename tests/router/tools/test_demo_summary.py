"""The demo's summary from synthetic receipts, against brute-force computations."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.contracts.wire import FailedAttempt, Receipt, Status
from router.tools.demo.summary import (
    FAILED_TO,
    OTHER,
    Outage,
    collate,
    latency_series,
    share_series,
    summarize,
)

T0 = 1_763_740_800_000


def sent(
    id: str,
    ts: int,
    carrier: str = "gb-ee",
    price: float = 0.01,
    failovers: list[FailedAttempt] | None = None,
) -> Receipt:
    return Receipt(
        id=id,
        status="sent",
        ts=ts,
        carrier=carrier,
        price=price,
        attempt=1 + len(failovers or ()),
        route="aggregator" if carrier.startswith("agg") else "direct",
        failovers=failovers or [],
    )


def failed(
    id: str,
    ts: int,
    code: int,
    attempt: int = 0,
    failovers: list[FailedAttempt] | None = None,
    carrier: str | None = None,
) -> Receipt:
    """A failed outcome; after attempts it names the last carrier tried, as the worker does."""
    return Receipt(
        id=id,
        status="failed",
        ts=ts,
        error_code=code,
        attempt=attempt,
        failovers=failovers or [],
        carrier=carrier,
    )


def report(id: str, ts: int, code: int | None = None, carrier: str = "gb-ee") -> Receipt:
    status: Status = "delivered" if code is None else "undelivered"
    return Receipt(id=id, status=status, ts=ts, error_code=code, carrier=carrier)


def brute_percentile(values: list[float], q: float) -> float:
    """Nearest rank, written out: the smallest value with at least q% of values <= it."""
    for v in sorted(values):
        if sum(1 for x in values if x <= v) * 100 >= q * len(values):
            return v
    raise AssertionError("unreachable")


# -- latencies, counts, throughput ------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5_000),  # created offset
            st.integers(1, 20_000),  # sent latency
            st.sampled_from(["delivered", "undelivered", "lost", "failed", "none"]),
            st.integers(1, 30_000),  # delivery latency after sent
            st.booleans(),  # duplicate the receipts
        ),
        min_size=1,
        max_size=80,
    )
)
def test_figures_against_brute_force(rows: list[tuple[int, int, str, int, bool]]) -> None:
    created: dict[str, int] = {}
    receipts: list[Receipt] = []
    for i, (off, lat, fate, dlat, dup) in enumerate(rows):
        id = f"r{i}"
        created[id] = T0 + off
        batch: list[Receipt] = []
        if fate == "failed":
            batch.append(failed(id, T0 + off + lat, 30008, attempt=3))
        elif fate != "none":
            batch.append(sent(id, T0 + off + lat, price=0.001 * (i + 1)))
            if fate == "delivered":
                batch.append(report(id, T0 + off + lat + dlat))
            elif fate == "undelivered":
                batch.append(report(id, T0 + off + lat + dlat, 30003))
        receipts += batch * (2 if dup else 1)
    random.Random(len(rows)).shuffle(receipts)
    s = summarize(created, receipts)

    fates = [r[2] for r in rows]
    n_sent = sum(f in ("delivered", "undelivered", "lost") for f in fates)
    n_delivered = fates.count("delivered")
    assert s.requests == len(rows)
    assert s.with_outcome == n_sent + fates.count("failed")
    assert s.without_outcome == fates.count("none")
    assert s.by_status == {
        "sent": n_sent,
        "failed": fates.count("failed"),
        "delivered": n_delivered,
        "undelivered": fates.count("undelivered"),
    }
    assert s.delivered == n_delivered
    assert s.sent_without_report == fates.count("lost")
    assert s.duplicates == sum(
        (r[2] != "none") * (1 + (r[2] in ("delivered", "undelivered"))) for r in rows if r[4]
    )
    sent_lat = [float(r[1]) for r in rows if r[2] in ("delivered", "undelivered", "lost")]
    dlv_lat = [float(r[1] + r[3]) for r in rows if r[2] == "delivered"]
    for got, values in ((s.latency_sent, sent_lat), (s.latency_delivered, dlv_lat)):
        assert got.count == len(values)
        if values:
            assert got.p50_ms == brute_percentile(values, 50)
            assert got.p99_ms == brute_percentile(values, 99)
            assert got.max_ms == max(values)
        else:
            assert got.p50_ms is None
    cost = sum(
        0.001 * (i + 1) for i, r in enumerate(rows) if r[2] in ("delivered", "undelivered", "lost")
    )
    assert s.cost_usd == pytest.approx(cost)
    if n_delivered:
        assert s.cost_per_delivered_usd == pytest.approx(cost / n_delivered)
    else:
        assert s.cost_per_delivered_usd is None
    outcome_ts = [T0 + r[0] + r[1] for r in rows if r[2] != "none"]
    if outcome_ts:
        span_s = max(1, max(outcome_ts) - min(created.values())) / 1000
        assert s.outcomes_per_second == pytest.approx(len(outcome_ts) / span_s)


def test_throughput_and_offered_rate() -> None:
    created = {f"r{i}": T0 + 10 * i for i in range(101)}  # 101 requests over 1 s
    receipts = [sent(f"r{i}", T0 + 10 * i + 500) for i in range(101)]
    s = summarize(created, receipts)
    assert s.offered_per_second == pytest.approx(101 / 1.0)
    assert s.outcomes_per_second == pytest.approx(101 / 1.5)
    assert (s.first_created_ms, s.last_created_ms, s.last_outcome_ms) == (T0, T0 + 1000, T0 + 1500)


def test_the_earliest_duplicate_counts_and_other_runs_are_left_out() -> None:
    created = {"a": T0}
    receipts = [sent("a", T0 + 900), sent("a", T0 + 100), sent("zz", T0 + 5), report("b", T0)]
    s = summarize(created, receipts)
    assert s.latency_sent.p50_ms == 100.0
    assert (s.receipts_read, s.duplicates, s.foreign) == (2, 1, 2)


# -- outcomes by code -------------------------------------------------------------------


def test_outcomes_by_status_and_code_with_their_meaning() -> None:
    created = {f"r{i}": T0 for i in range(10)}
    receipts = [
        failed("r0", T0 + 1, 21211),
        failed("r0", T0 + 2, 21211),  # duplicate: one request
        failed("r1", T0 + 1, 21618),
        failed("r2", T0 + 1, 39001),  # every breaker open (router)
        sent("r3", T0 + 1),
        report("r3", T0 + 9, 30006),  # landline (carrier)
        sent("r4", T0 + 1),
        report("r4", T0 + 9, 30003),
        sent("r5", T0 + 1),
        report("r5", T0 + 9, 30003),
        sent("r6", T0 + 1),
        report("r6", T0 + 9),
        failed("r7", T0 + 1, 30008, attempt=3),
    ]
    s = summarize(created, receipts)
    got = {(c.status, c.code): c.count for c in s.outcomes}
    assert got == {
        ("failed", 21211): 1,
        ("failed", 21618): 1,
        ("failed", 39001): 1,
        ("undelivered", 30006): 1,
        ("undelivered", 30003): 2,
        ("failed", 30008): 1,
    }
    assert s.outcomes[0].code == 30003  # most first
    meanings = {(c.status, c.code): c.meaning for c in s.outcomes}
    assert "breaker" in meanings[("failed", 39001)]
    assert "landline" in meanings[("undelivered", 30006)]
    assert meanings[("undelivered", 30003)] == "unreachable handset"
    # refusals without a route are not routable; a failure after attempts is
    assert s.routed == 10 - 2
    assert s.delivered == 1
    assert s.delivery_rate == pytest.approx(1 / 8)
    assert s.delivery_rate_all == pytest.approx(1 / 10)
    assert s.reported == 4
    assert s.reported_delivery_rate == pytest.approx(1 / 4)


# -- failover events --------------------------------------------------------------------


def fo(carrier: str, attempt: int, code: int = 30008) -> FailedAttempt:
    return FailedAttempt(carrier, attempt, code)


def test_failover_events_moves_and_outage_windows() -> None:
    outage = Outage("agg-eu-1", T0 + 1000, T0 + 2000)
    created = {f"r{i}": T0 for i in range(6)}
    receipts = [
        sent("r0", T0 + 500),  # no failover
        sent("r1", T0 + 900, "agg-global-1", failovers=[fo("agg-eu-1", 1, 30001)]),
        sent("r2", T0 + 1500, "agg-global-1", failovers=[fo("agg-eu-1", 1)]),
        # a chain, listed out of order: agg-eu-1 -> agg-eu-2 -> gb-ee
        sent("r3", T0 + 1600, "gb-ee", failovers=[fo("agg-eu-2", 2), fo("agg-eu-1", 1)]),
        failed(
            "r4",
            T0 + 2500,
            30008,
            attempt=3,
            failovers=[fo("agg-eu-1", 1), fo("agg-eu-2", 2), fo("gb-ee", 3)],
            carrier="gb-ee",
        ),
        sent("r5", T0 + 2600, "gb-ee", failovers=[fo("agg-eu-1", 1)]),
        sent("r5", T0 + 2700, "gb-ee", failovers=[fo("agg-eu-1", 1)]),  # duplicate
    ]
    s = summarize(created, receipts, outage)
    f = s.failovers
    assert f.messages == 5
    assert f.attempts == 1 + 1 + 2 + 3 + 1
    assert {(c.code, c.count) for c in f.by_code} == {(30001, 1), (30008, 7)}
    moves = {(m.from_carrier, m.to_carrier): m.count for m in f.moves}
    assert moves == {
        ("agg-eu-1", "agg-global-1"): 2,
        ("agg-eu-1", "agg-eu-2"): 2,
        ("agg-eu-2", "gb-ee"): 2,
        ("gb-ee", FAILED_TO): 1,
        ("agg-eu-1", "gb-ee"): 1,
    }
    assert f.moves[0].count == 2
    assert (f.before_outage, f.during_outage, f.after_outage) == (1, 1 + 2, 3 + 1)
    assert f.from_outage_carrier == 5
    assert s.policies[-1].failovers == f.attempts


def test_outage_shares_before_during_after() -> None:
    outage = Outage("agg-eu-1", T0 + 1000, T0 + 2000)
    created: dict[str, int] = {}
    receipts: list[Receipt] = []
    plan = [
        (T0 + 100, "agg-eu-1", 6),
        (T0 + 100, "gb-ee", 4),  # before: 60% on agg-eu-1
        (T0 + 1500, "agg-eu-1", 1),
        (T0 + 1500, "agg-global-1", 6),
        (T0 + 1500, "gb-ee", 3),
        (T0 + 2500, "agg-eu-1", 1),
        (T0 + 2500, "gb-ee", 1),
    ]
    for ts, carrier, n in plan:
        for _ in range(n):
            id = f"r{len(created)}"
            created[id] = T0
            receipts.append(sent(id, ts, carrier))
    o = summarize(created, receipts, outage).outage
    assert o is not None
    assert (o.start_s, o.end_s) == (1.0, 2.0)
    assert o.share_before == pytest.approx(0.6)
    assert o.share_during == pytest.approx(0.1)
    assert o.share_after == pytest.approx(0.5)
    assert o.taken_over_by[0][0] == "agg-global-1"
    assert o.taken_over_by[0][1] == pytest.approx(0.6)
    assert [c for c, _ in o.taken_over_by] == ["agg-global-1"]  # gb-ee fell from 40% to 30%
    endless = summarize(created, receipts, Outage("agg-eu-1", T0 + 1000)).outage
    assert endless is not None
    assert endless.end_s is None
    assert endless.share_after is None


# -- cost and policies ------------------------------------------------------------------


@dataclass(frozen=True)
class FakePolicy:
    name: str
    requests: int = 100
    routed: int = 90
    sent: int = 88
    delivered: int = 80
    delivery_rate: float = 80 / 90
    cost_usd: float = 4.0
    cost_per_delivered_usd: float = 0.05
    failovers: int = 3
    aggregator_share: float = 0.25


def test_cost_per_delivered_and_policy_rows() -> None:
    created = {f"r{i}": T0 for i in range(4)}
    receipts = [
        sent("r0", T0 + 1, "agg-eu-1", price=0.03),
        report("r0", T0 + 5),
        sent("r0", T0 + 2, "agg-eu-1", price=0.03),  # duplicate: billed once
        sent("r1", T0 + 1, "gb-ee", price=0.05),
        report("r1", T0 + 5, 30003),
        sent("r2", T0 + 1, "gb-ee", price=0.02),
        report("r2", T0 + 5),
        failed("r3", T0 + 1, 21211),
    ]
    s = summarize(created, receipts, policies=[FakePolicy("supernet"), FakePolicy("oracle")])
    assert s.cost_usd == pytest.approx(0.10)
    assert s.cost_per_delivered_usd == pytest.approx(0.10 / 2)
    assert s.aggregator_share == pytest.approx(1 / 3)
    assert s.top_carriers == [("gb-ee", 2), ("agg-eu-1", 1)]
    names = [(r.name, r.source) for r in s.policies]
    assert names == [
        ("supernet", "economics"),
        ("oracle", "economics"),
        ("supernet (this run)", "live"),
    ]
    live = s.policies[-1]
    assert live.cost_per_delivered_usd == s.cost_per_delivered_usd
    assert live.delivery_rate == pytest.approx(2 / 3)  # r3 had no route
    assert s.policies[0].cost_per_delivered_usd == 0.05


def test_nothing_received() -> None:
    s = summarize({"a": T0}, [])
    assert (s.with_outcome, s.without_outcome, s.delivered) == (0, 1, 0)
    assert s.delivery_rate == 0.0
    assert s.cost_per_delivered_usd is None
    assert s.latency_sent.count == 0
    assert s.outcomes_per_second is None


# -- series for the plots ---------------------------------------------------------------


def test_share_series_keeps_the_top_carriers_and_folds_the_rest() -> None:
    created: dict[str, int] = {}
    receipts = []
    counts = {"a": 5, "b": 4, "c": 3, "d": 1}
    for carrier, n in counts.items():
        for k in range(n):
            id = f"{carrier}{k}"
            created[id] = T0
            receipts.append(sent(id, T0 + 1000 * (k % 2) + 10, carrier))
    series = share_series(collate(created, receipts), T0, bin_s=1.0, top=2)
    assert series.carriers == ["a", "b", OTHER]
    assert series.seconds == [0.0, 1.0]
    assert series.counts["a"] == [3, 2]
    assert series.counts[OTHER] == [3, 1]  # c: 2 + 1, d: 1 + 0
    total = sum(sum(v) for v in series.counts.values())
    assert total == sum(counts.values())


def test_latency_series_bins_by_creation_second() -> None:
    rng = random.Random(5)
    created: dict[str, int] = {}
    receipts = []
    expected: dict[int, list[float]] = {}
    for i in range(300):
        off = rng.randrange(0, 3000)
        lat = rng.randrange(1, 900)
        created[f"r{i}"] = T0 + off
        receipts.append(sent(f"r{i}", T0 + off + lat))
        expected.setdefault(off // 1000, []).append(float(lat))
    series = latency_series(collate(created, receipts), T0)
    assert series.seconds == [float(k) for k in sorted(expected)]
    for k, p50, p99, n in zip(
        sorted(expected), series.p50_ms, series.p99_ms, series.count, strict=True
    ):
        assert n == len(expected[k])
        assert p50 == brute_percentile(expected[k], 50)
        assert p99 == brute_percentile(expected[k], 99)
    assert not math.isnan(sum(series.p99_ms))
