"""Held requests: while every carrier that could take a message is full, it waits (and
intake pauses) instead of failing, leaves in order as room appears, and fails once its
validity runs out."""

from __future__ import annotations

from router.contracts.codes import Code
from tests.router.engine.fakes import (
    FR_SINGLE,
    GB_MULTI,
    World,
    request,
)
from tests.router.engine.pipeline_world import (
    THROUGHPUT,
    assert_done_only_after_ack,
    only_receipt,
    saturate,
    twin_decision,
)

# -- held requests -----------------------------------------------------------------------


def test_request_is_held_while_every_carrier_is_full() -> None:
    w = World()
    saturate(w, "agg-premium")
    offset = w.take(request(to=FR_SINGLE))
    assert w.link.submits == []
    assert w.sink.records == []
    assert len(w.pipeline.held) == 1
    assert w.committable() == offset
    w.pipeline.retry_held()  # no time passed: still no room
    assert w.link.submits == []
    assert len(w.pipeline.held) == 1
    w.clock.advance(1.5 / THROUGHPUT["agg-premium"])
    w.pipeline.retry_held()
    assert len(w.pipeline.held) == 0
    carrier, item = w.last_submit()
    assert carrier == "agg-premium"
    w.accept(carrier, item)
    assert only_receipt(w).status == "sent"
    assert_done_only_after_ack(w, offset)


def test_held_requests_leave_in_order_as_room_appears() -> None:
    w = World()
    saturate(w, "agg-premium")
    for n in range(3):
        w.take(request(id=f"h{n}", to=FR_SINGLE))
    assert len(w.pipeline.held) == 3
    w.clock.advance(1.5 / THROUGHPUT["agg-premium"])
    w.pipeline.retry_held()
    assert [i.id for _, i in w.link.submits] == ["h0"]
    assert [m.request.id for m in w.pipeline.held] == ["h1", "h2"]
    w.clock.advance(1.0)
    w.pipeline.retry_held()
    assert [i.id for _, i in w.link.submits] == ["h0", "h1", "h2"]


def test_full_best_carrier_spills_over_instead_of_holding() -> None:
    w = World()
    first = twin_decision(w, GB_MULTI).carrier
    assert first is not None
    saturate(w, first)
    w.take(request(to=GB_MULTI))
    assert w.last_submit()[0] != first
    assert len(w.pipeline.held) == 0


def test_held_request_that_expires_fails() -> None:
    w = World()
    saturate(w, "agg-premium")
    offset = w.take(request(to=FR_SINGLE, created_at=w.wall.ms, validity_s=1))
    w.clock.advance(2.0)
    w.wall.ms += 2_000
    w.pipeline.retry_held()
    assert w.link.submits == []
    receipt = only_receipt(w)
    assert (receipt.status, receipt.error_code) == ("failed", Code.EXPIRED)
    assert_done_only_after_ack(w, offset)
