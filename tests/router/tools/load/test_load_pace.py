"""Rate control, driven by a fake clock: never ahead of schedule, catches up, stops."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.tools.load.pace import Pacer


def simulate(pacer: Pacer, cost_per_message_s: float, stall: tuple[float, float] | None = None
             ) -> list[tuple[float, int]]:  # fmt: skip
    """Run the shell's loop on a fake clock; returns (time, sent) after every batch."""
    now = 100.0
    trace = []
    while not pacer.done:
        n = pacer.take(now)
        now += n * cost_per_message_s
        if stall and stall[0] <= now < stall[0] + stall[1]:
            now += stall[1]
        trace.append((now, pacer.sent))
        now += pacer.wait(now)
        assert len(trace) < 10_000_000
    return trace


@given(
    rate=st.floats(1, 100_000),
    total=st.integers(0, 50_000),
    cost=st.sampled_from([0.0, 1e-6, 2e-5]),
)
@settings(max_examples=60, deadline=None)
def test_never_ahead_of_schedule_and_always_finishes(rate: float, total: int, cost: float) -> None:
    pacer = Pacer(rate, total)
    trace = simulate(pacer, cost)
    assert pacer.sent == total
    start = pacer.start
    if total == 0:
        return
    assert start is not None
    for now, sent in trace:
        # Message k is due at start + k / rate: by `now`, at most floor(elapsed * rate) + 1.
        assert sent <= math.floor((now - start) * rate + 1e-6) + 1


def test_the_rate_over_the_run_is_the_target() -> None:
    pacer = Pacer(20_000, 100_000)
    trace = simulate(pacer, cost_per_message_s=10e-6)  # half the time budget per message
    assert pacer.start is not None
    elapsed = trace[-1][0] - pacer.start
    assert elapsed == pytest.approx(pacer.planned_seconds(), rel=0.01)
    # Batches are slices of traffic, not single messages.
    assert len(trace) < 100_000 / 50


def test_a_stall_is_caught_up_in_bounded_batches() -> None:
    pacer = Pacer(10_000, 50_000, max_batch=500)
    trace = simulate(pacer, cost_per_message_s=1e-6, stall=(101.0, 1.0))
    assert pacer.start is not None
    sizes = [b - a for (_, a), (_, b) in zip([(0.0, 0), *trace], trace, strict=False)]
    assert max(sizes) <= 500
    elapsed = trace[-1][0] - pacer.start
    assert elapsed == pytest.approx(pacer.planned_seconds(), abs=0.05)  # caught up


def test_a_slow_sender_gets_everything_as_fast_as_it_can() -> None:
    pacer = Pacer(100_000, 10_000)
    trace = simulate(pacer, cost_per_message_s=1e-4)  # can do only 10,000/s
    assert pacer.start is not None
    assert trace[-1][0] - pacer.start == pytest.approx(1.0, rel=0.01)


def test_wait_sleeps_at_least_a_slice_and_at_most_until_the_next_message() -> None:
    pacer = Pacer(10, 5, slice_s=0.005)
    assert pacer.take(0.0) == 1
    assert pacer.wait(0.0) == pytest.approx(0.1)
    assert pacer.take(0.05) == 0  # not due yet
    assert pacer.take(0.1) == 1
    assert pacer.wait(0.1) == pytest.approx(0.1)
    pacer = Pacer(1_000_000, 5, slice_s=0.005)
    assert pacer.take(0.0) == 1
    assert pacer.wait(0.0) == pytest.approx(0.005)


def test_duration_gives_rate_times_seconds() -> None:
    assert Pacer.for_duration(2500, 4).total == 10_000


@pytest.mark.parametrize(("rate", "total"), [(0, 1), (-1, 1), (math.inf, 1), (1, -1)])
def test_bad_arguments_are_refused(rate: float, total: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        Pacer(rate, total)
