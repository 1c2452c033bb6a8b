"""The memory of message ids: outcomes are final, and it is bounded in count and age."""

from __future__ import annotations

from router.engine.attempts import FAILED, IN_FLIGHT, SENT, AttemptMemory, AttemptRecord


def test_an_outcome_is_final_and_a_late_attempt_never_reopens_it() -> None:
    mem = AttemptMemory(window_s=300, max_ids=10)
    mem.record(AttemptRecord("m", IN_FLIGHT, "a", 1), 0, now=0)
    mem.record(AttemptRecord("m", SENT, "a", 1, price=0.01, segments=2), 0, now=0)
    mem.record(AttemptRecord("m", IN_FLIGHT, "b", 2), 0, now=0)
    k = mem.get("m")
    assert k is not None
    assert (k.state, k.carrier, k.segments) == (SENT, "a", 2)


def test_bounded_in_count_oldest_first() -> None:
    mem = AttemptMemory(window_s=300, max_ids=3)
    for i in range(5):
        mem.entry(f"m{i}", 0, now=float(i))
    assert len(mem) == 3
    assert mem.get("m0") is None
    assert mem.get("m4") is not None


def test_entries_older_than_the_window_go_whatever_their_state() -> None:
    """A restored attempt whose request is never read again must not keep older ids."""
    mem = AttemptMemory(window_s=10, max_ids=100)
    mem.record(AttemptRecord("stale", IN_FLIGHT, "a", 1), 0, now=0)
    mem.record(AttemptRecord("old", FAILED, "", 0, code=21211), 0, now=1)
    mem.entry("recent", 0, now=5)
    mem.entry("new", 0, now=12)
    assert (mem.get("stale"), mem.get("old")) == (None, None)
    assert mem.get("recent") is not None


def test_revoked_partitions_are_forgotten() -> None:
    mem = AttemptMemory(window_s=300, max_ids=100)
    mem.entry("p0", 0, now=0)
    mem.entry("p1", 1, now=0)
    assert mem.forget_partitions({1}) == 1
    assert (mem.get("p0") is not None, mem.get("p1")) == (True, None)


def test_the_pipeline_keeps_the_memory_it_is_given_even_while_empty() -> None:
    """The worker's --dedupe-window-s and --dedupe-max-ids reach the pipeline: an empty
    memory is falsy (it has a length), which once made the pipeline build a default one."""
    from prometheus_client import CollectorRegistry

    from router.engine.metrics import Metrics
    from router.engine.offsets import OffsetTracker
    from router.engine.pipeline import Pipeline
    from tests.router.engine.fakes import FakeLink, FakeSink, new_router

    memory = AttemptMemory(window_s=900.0, max_ids=7)
    router = new_router()
    pipeline = Pipeline(
        router, router.table.carriers, FakeLink(), FakeSink(), OffsetTracker(),
        Metrics(CollectorRegistry()), submit_timeout_s=1.0, max_attempts=2, memory=memory,
    )  # fmt: skip
    assert pipeline.memory is memory
