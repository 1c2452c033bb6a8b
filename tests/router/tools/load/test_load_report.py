"""Outcome counts and latency percentiles from synthetic receipts."""

from __future__ import annotations

import random

import pytest

from router.contracts.wire import Receipt
from router.tools.load.report import Tally, percentile


def test_percentile_nearest_rank_against_brute_force() -> None:
    rng = random.Random(4)
    for n in (1, 2, 7, 100, 1001):
        values = sorted(rng.uniform(0, 1000) for _ in range(n))
        for q in (50, 90, 99, 100):
            got = percentile(values, q)
            # Nearest rank: the smallest value with at least q% of the values <= it.
            expected = next(v for v in values if sum(x <= v for x in values) >= q / 100 * n)
            assert got == expected
    assert percentile([], 50) is None


def test_engine_latencies_apart_from_the_carriers() -> None:
    """request -> submitted from ``submitted_ts``; carrier accept -> durable from the
    broker's append time, only where it is given; neither from other statuses."""
    tally = Tally()
    for i in range(4):
        tally.expect(f"m{i}", 1_000)
    tally.add(Receipt("m0", "sent", ts=1_050, submitted_ts=1_020), appended_ms=1_057)
    tally.add(Receipt("m1", "sent", ts=1_200, submitted_ts=1_004), appended_ms=1_290)
    tally.add(Receipt("m2", "sent", ts=1_100))  # no submitted_ts, no append time
    tally.add(Receipt("m3", "failed", ts=1_010, error_code=21211), appended_ms=1_500)
    tally.add(Receipt("m0", "delivered", ts=3_000), appended_ms=3_001)
    s = tally.summary(produce_seconds=1.0, target_rate=4.0)
    assert (s.latency_submitted.count, s.latency_submitted.max_ms) == (2, 20.0)
    assert s.latency_submitted.p50_ms == 4.0
    assert (s.latency_durable.count, s.latency_durable.p50_ms, s.latency_durable.max_ms) == (
        2, 7.0, 90.0)  # fmt: skip
    assert s.latency_sent.count == 3


def test_counts_dedupes_and_latencies() -> None:
    tally = Tally()
    created = {f"m{i}": 1_000_000 + i for i in range(10)}
    for i, c in created.items():
        tally.expect(i, c)
    receipts: list[Receipt] = []
    for k, (i, c) in enumerate(created.items()):
        if k < 6:
            receipts.append(Receipt(i, "sent", ts=c + 10 * (k + 1)))
        elif k < 8:
            receipts.append(Receipt(i, "failed", ts=c + 5, error_code=21211))
        # k = 8, 9: no outcome
    receipts += [Receipt("m0", "sent", ts=created["m0"] + 10)]  # duplicate: ignored
    receipts += [Receipt("m1", "delivered", ts=created["m1"] + 1000)]
    receipts += [Receipt("m2", "delivered", ts=created["m2"] + 3000)]
    receipts += [Receipt("m2", "delivered", ts=created["m2"] + 3000)]  # duplicate
    receipts += [Receipt("m3", "undelivered", ts=created["m3"] + 2000, error_code=30003)]
    receipts += [Receipt("other", "sent", ts=0)]  # not ours
    random.Random(1).shuffle(receipts)
    # A delivery receipt may overtake its outcome: counts must not depend on the order.
    for r in receipts:
        tally.add(r)

    s = tally.summary(produce_seconds=2.0, target_rate=5.0)
    assert s.produced == 10
    assert s.produce_rate == 5.0
    assert s.with_outcome == 8
    assert s.without_outcome == 2
    assert s.by_status == {"delivered": 2, "failed": 2, "sent": 6, "undelivered": 1}
    assert s.by_error == {"failed 21211": 2, "undelivered 30003": 1}
    assert s.sent_without_delivery == 3  # m0, m4, m5
    assert s.latency_sent.count == 6
    assert s.latency_sent.p50_ms == 30.0
    assert s.latency_sent.max_ms == 60.0
    assert s.latency_delivered.count == 2
    assert s.latency_delivered.p50_ms == 1000.0
    assert s.latency_delivered.p99_ms == 3000.0
    assert s.duplicates == 2
    assert s.foreign == 1
    assert s.receipts == len(receipts) - 1
    # Throughput over the outcomes' own span: the latency before the first is not counted.
    ts = [r.ts for r in receipts if r.status in ("sent", "failed") and r.id != "other"]
    assert s.outcomes_per_second == pytest.approx(8 / ((max(ts) - min(ts)) / 1000))
    assert s.to_dict()["latency_sent"] == {
        "count": 6, "p50_ms": 30.0, "p90_ms": 60.0, "p99_ms": 60.0, "max_ms": 60.0
    }  # fmt: skip


def test_nothing_received() -> None:
    tally = Tally()
    tally.expect("a", 1)
    s = tally.summary(produce_seconds=0.0, target_rate=1.0)
    assert s.without_outcome == 1
    assert s.latency_sent.p50_ms is None
    assert s.outcomes_per_second is None
    assert s.produce_rate == 0.0
