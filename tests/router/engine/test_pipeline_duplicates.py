"""Repeated ids and the attempts log in the pipeline: a repeat is answered with the
original's outcome and never submitted again, and an attempt goes to a carrier only once
it is durable in the log (restored attempts go back to the carrier they were logged for).
"""

from __future__ import annotations

import pytest

from router.contracts.codes import Code
from router.engine import attempts
from router.engine.attempts import AttemptRecord
from tests.router.engine.fakes import (
    PARTITION,
    PARTITION_NO,
    US_MULTI,
    World,
    request,
)
from tests.router.engine.pipeline_world import (
    assert_done_only_after_ack,
    twin_decision,
)

# -- duplicates ---------------------------------------------------------------------------


def test_a_repeat_in_flight_is_answered_with_the_original() -> None:
    w = World()
    a = w.take(request(id="dup"))
    b = w.take(request(id="dup"))
    assert len(w.link.submits) == 1  # one message, one submit
    c1, i1 = w.last_submit()
    w.publish(c1, i1)
    w.accept(c1, i1)
    assert [r.status for r in w.sink.receipts] == ["sent"]
    assert w.committable() == a
    w.sink.ack_all()
    assert w.committable() == b + 1
    assert w.tracker.in_flight == 0
    assert (
        w.metrics.registry.get_sample_value(
            "supernet_duplicate_requests_total", {"outcome": "in_flight"}
        )
        == 1.0
    )


def test_a_repeat_after_sent_gets_the_same_sent_receipt_without_a_submit() -> None:
    w = World()
    w.take(request(id="dup", body="two segments " * 14))
    carrier, item = w.last_submit()
    w.accept(carrier, item, price=0.0125)
    w.sink.ack_all()
    offset = w.take(request(id="dup", body="two segments " * 14))
    assert len(w.link.submits) == 1
    first, again = w.sink.receipts
    assert again.status == "sent"
    assert (again.carrier, again.route, again.attempt) == (first.carrier, first.route, 1)
    assert (again.segments, again.encoding) == (first.segments, first.encoding) == (2, "GSM-7")
    assert again.price == pytest.approx(first.price or 0) == pytest.approx(0.025)
    assert_done_only_after_ack(w, offset)


def test_a_repeat_after_failed_gets_the_same_code() -> None:
    w = World(max_attempts=1)
    w.take(request(id="dup"))
    carrier, item = w.last_submit()
    w.reject(carrier, item, Code.UNKNOWN_ERROR)
    w.take(request(id="dup"))
    assert len(w.link.submits) == 1
    assert [(r.status, r.error_code) for r in w.sink.receipts] == [
        ("failed", Code.UNKNOWN_ERROR),
        ("failed", Code.UNKNOWN_ERROR),
    ]


def test_an_attempt_restored_from_the_log_goes_to_the_same_carrier() -> None:
    """A re-read request whose attempt a dead worker logged: same carrier, same id and
    attempt number, whatever the router would choose now; a rejection fails it over
    past the carriers tried before."""
    w = World()
    decision = twin_decision(w, US_MULTI)
    last = decision.routes[-1]  # not the router's choice
    assert last.carrier != decision.carrier
    logged = AttemptRecord(
        id="r1", state=attempts.IN_FLIGHT, carrier=last.carrier, attempt=2, kind=last.kind,
        price=last.price, tried=(decision.carrier or "",),
    )  # fmt: skip
    w.pipeline.restore(PARTITION_NO, [logged])
    w.take(request(id="r1", to=US_MULTI))
    carrier, item = w.last_submit()
    assert (carrier, item.id, item.attempt) == (last.carrier, "r1", 2)
    assert w.sink.attempts == []  # already logged: no new attempt record before it
    w.reject(carrier, item, Code.UNKNOWN_ERROR)
    nxt, item3 = w.last_submit()
    assert nxt not in (decision.carrier, last.carrier)
    assert item3.attempt == 3
    assert [(a.carrier, a.attempt) for a, _ in w.sink.attempts] == [(nxt, 3)]


def test_no_submit_before_the_attempt_is_durable() -> None:
    w = World()
    w.sink.hold_attempts = True
    w.take(request(id="wal"))
    assert w.link.submits == []
    ((record, partition),) = w.sink.attempts
    assert (record.id, record.state, record.attempt, partition) == (
        "wal", attempts.IN_FLIGHT, 1, PARTITION_NO,
    )  # fmt: skip
    w.sink.ack_attempts()
    carrier, item = w.last_submit()
    assert (carrier, item.attempt) == (record.carrier, 1)


def test_an_attempt_acknowledged_after_its_partition_moved_is_not_submitted() -> None:
    w = World()
    w.sink.hold_attempts = True
    w.take(request(id="moved"))
    w.tracker.forget(PARTITION)
    w.pipeline.forget({PARTITION_NO})
    w.sink.ack_attempts()
    assert w.link.submits == []
