"""The committable offset never passes a record whose outcome is not durable; waiting
for partitions to settle is woken by the calls that finish their records."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.engine.offsets import OffsetTracker


def test_commit_waits_for_the_lowest_record() -> None:
    t: OffsetTracker[int] = OffsetTracker()
    for offset in (10, 11, 12):
        t.add(0, offset)
    assert t.committable(0) == 10
    t.done(0, 12)
    t.done(0, 11)
    assert t.committable(0) == 10
    assert t.in_flight == 1
    t.done(0, 10)
    assert t.committable(0) == 13
    assert t.in_flight == 0


def test_to_commit_reports_only_moved_partitions() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.add("a", 0)
    t.add("b", 5)
    t.done("a", 0)
    assert t.to_commit() == {"a": 1, "b": 5}
    t.committed({"a": 1, "b": 5})
    assert t.to_commit() == {}
    t.done("b", 5)
    assert t.to_commit() == {"b": 6}


def test_forgotten_partition_is_never_committed() -> None:
    t: OffsetTracker[int] = OffsetTracker()
    t.add(1, 0)
    t.add(1, 1)
    assert t.forget(1) == 2
    assert t.in_flight == 0
    t.done(1, 0)  # a late outcome for a revoked partition is ignored
    assert t.to_commit() == {}
    assert t.committable(1) is None


def test_offsets_must_increase() -> None:
    t: OffsetTracker[int] = OffsetTracker()
    t.add(0, 5)
    with pytest.raises(ValueError, match="came after"):
        t.add(0, 4)


@given(
    st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_committable_is_lowest_unfinished(gaps: list[int], rnd: object) -> None:
    """Against a brute-force oracle: finish records in a random order; after each step
    the committable offset is the lowest unfinished offset (or one past the last)."""
    import random

    assert isinstance(rnd, random.Random)
    offsets = []
    o = 0
    for g in gaps:
        o += g
        offsets.append(o)
    t: OffsetTracker[int] = OffsetTracker()
    for offset in offsets:
        t.add(0, offset)
    order = offsets[:]
    rnd.shuffle(order)
    unfinished = set(offsets)
    for offset in order:
        t.done(0, offset)
        unfinished.discard(offset)
        expected = min(unfinished) if unfinished else offsets[-1] + 1
        assert t.committable(0) == expected
        assert t.in_flight == len(unfinished)


# --- waiting for partitions to settle -----------------------------------------------------


async def test_settled_returns_once_the_partitions_in_flight_are_done() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.add("a", 0)
    t.add("a", 1)
    t.add("b", 0)
    waiting = asyncio.create_task(t.settled(["a"]))
    everything = asyncio.create_task(t.settled())
    await asyncio.sleep(0)
    t.done("a", 1)
    await asyncio.sleep(0)
    assert not waiting.done()
    t.done("a", 0)
    async with asyncio.timeout(1):
        await waiting
    assert not everything.done()  # "b" is still in flight
    t.done("b", 0)
    async with asyncio.timeout(1):
        await everything


async def test_settled_returns_at_once_when_nothing_is_in_flight() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    async with asyncio.timeout(1):
        await t.settled()
        await t.settled(["never-seen"])


async def test_forgetting_a_partition_settles_it() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.add("a", 0)
    waiting = asyncio.create_task(t.settled())
    await asyncio.sleep(0)
    t.forget("a")
    async with asyncio.timeout(1):
        await waiting


async def test_a_waiter_that_times_out_is_removed() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.add("a", 0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await t.settled(["a"])
    assert t._waiters == []
    t.done("a", 0)
