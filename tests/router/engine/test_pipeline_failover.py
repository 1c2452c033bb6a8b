"""Failover in the pipeline: rejections move a message to the next carrier within its
attempts and its price cap, silences are asked again before they count, and a silence
that proves nothing (the carrier offline, the link reconnected) never moves it."""

from __future__ import annotations

import pytest

from router.contracts import interconnect, wire
from router.contracts.codes import Code
from router.core.health import Breaker
from router.engine.pipeline import Message
from tests.router.engine.fakes import (
    FR_SINGLE,
    GB_MULTI,
    PARTITION,
    PARTITION_NO,
    World,
    carriers_reaching,
    deck_price,
    request,
)
from tests.router.engine.pipeline_world import (
    KIND,
    assert_done_only_after_ack,
    only_receipt,
    twin_decision,
)

# -- failover -----------------------------------------------------------------------------


def test_rejection_fails_over_to_the_next_carrier() -> None:
    w = World(max_attempts=3)
    expected = twin_decision(w, GB_MULTI)
    offset = w.take(request(to=GB_MULTI))
    c1, item1 = w.last_submit()
    w.wall.ms += 120  # the first carrier takes its time to refuse
    w.reject(c1, item1, Code.QUEUE_OVERFLOW)
    assert w.sink.records == []
    assert len(w.link.submits) == 2
    c2, item2 = w.last_submit()
    assert item2.ts == item1.ts + 120  # each ask signs its own time
    assert c2 != c1
    assert c2 == expected.fallbacks()[0].carrier
    assert item2.attempt == 2
    assert item2.price == deck_price(c2, GB_MULTI)
    same = ("id", "to", "account", "segments", "encoding", "country")
    assert [getattr(item2, f) for f in same] == [getattr(item1, f) for f in same]
    w.accept(c2, item2, price=0.05)
    receipt = only_receipt(w)
    assert receipt.status == "sent"
    assert receipt.carrier == c2
    assert receipt.route == KIND[c2]
    assert receipt.attempt == 2
    assert receipt.price == pytest.approx(0.05)
    assert receipt.failovers == [wire.FailedAttempt(c1, 1, Code.QUEUE_OVERFLOW)]
    # The engine's own time ends at the first submit; the failover was a carrier's time.
    assert receipt.submitted_ts == item1.ts
    assert_done_only_after_ack(w, offset)


def test_rejection_after_the_validity_period_fails_as_expired() -> None:
    w = World(max_attempts=3)
    offset = w.take(request(to=GB_MULTI, created_at=w.wall.ms, validity_s=5))
    c1, item1 = w.last_submit()
    w.wall.ms += 6_000  # the carrier answered after the request's validity ran out
    w.reject(c1, item1, Code.UNKNOWN_ERROR)
    assert len(w.link.submits) == 1, "no second attempt for an expired request"
    receipt = only_receipt(w)
    assert (receipt.status, receipt.error_code) == ("failed", Code.EXPIRED)
    assert receipt.failovers == [wire.FailedAttempt(c1, 1, Code.UNKNOWN_ERROR)]
    assert_done_only_after_ack(w, offset)


def test_rejection_without_a_code_counts_as_unknown_error() -> None:
    w = World()
    w.take(request())
    c1, item1 = w.last_submit()
    w.reject(c1, item1, None)
    c2, item2 = w.last_submit()
    w.accept(c2, item2)
    assert only_receipt(w).failovers == [wire.FailedAttempt(c1, 1, Code.UNKNOWN_ERROR)]


def test_exhausted_attempts_fail_with_the_last_code_and_every_failover() -> None:
    w = World(max_attempts=3)
    offset = w.take(request(to=GB_MULTI))
    codes = [Code.QUEUE_OVERFLOW, Code.NO_ROUTE, Code.UNKNOWN_ERROR]
    for code in codes:
        carrier, item = w.last_submit()
        w.reject(carrier, item, code)
    assert len(w.link.submits) == 3  # five carriers reach GB, but three attempts at most
    carriers = [c for c, _ in w.link.submits]
    assert len(set(carriers)) == 3
    assert set(carriers) <= carriers_reaching(GB_MULTI)
    assert [i.attempt for _, i in w.link.submits] == [1, 2, 3]
    receipt = only_receipt(w)
    assert receipt.status == "failed"
    assert receipt.error_code == Code.UNKNOWN_ERROR
    assert receipt.error_message
    assert receipt.carrier == carriers[-1]
    assert receipt.attempt == 3
    assert receipt.failovers == [
        wire.FailedAttempt(c, n, code)
        for n, (c, code) in enumerate(zip(carriers, codes, strict=True), 1)
    ]
    assert_done_only_after_ack(w, offset)


def test_single_carrier_rejection_fails_at_once() -> None:
    w = World(max_attempts=3)
    offset = w.take(request(to=FR_SINGLE))
    carrier, item = w.last_submit()
    w.reject(carrier, item, Code.QUEUE_OVERFLOW)
    assert len(w.link.submits) == 1
    receipt = only_receipt(w)
    assert (receipt.status, receipt.error_code) == ("failed", Code.QUEUE_OVERFLOW)
    assert receipt.failovers == [wire.FailedAttempt("agg-premium", 1, Code.QUEUE_OVERFLOW)]
    assert_done_only_after_ack(w, offset)


def test_failover_stays_within_max_price() -> None:
    cap = 0.028  # per message, one segment
    affordable = {c for c in carriers_reaching(GB_MULTI) if (deck_price(c, GB_MULTI) or 1) <= cap}
    assert 2 <= len(affordable) < len(carriers_reaching(GB_MULTI))
    w = World(max_attempts=5)
    w.take(request(to=GB_MULTI, max_price=cap))
    while len(w.sink.records) == 0:
        carrier, item = w.last_submit()
        assert item.price * item.segments <= cap
        w.reject(carrier, item, Code.UNKNOWN_ERROR)
    assert {c for c, _ in w.link.submits} == affordable
    assert len(w.link.submits) == len(affordable)
    assert only_receipt(w).status == "failed"


# -- submit timeouts ------------------------------------------------------------------------


def test_an_answered_submit_is_not_held_until_its_deadline() -> None:
    # The timeout queue names (id, attempt): a message answered in time is gone from the
    # pipeline at once, not kept alive until its deadline passes (memory, and the garbage
    # collector's work, at thousands of messages a second).
    w = World(submit_timeout_s=10.0)
    w.take(request())
    carrier, item = w.last_submit()
    w.publish(carrier, item)
    w.accept(carrier, item)
    assert len(w.pipeline.timeouts) == 1
    held = [x for entry in w.pipeline.timeouts for x in entry if isinstance(x, Message)]
    assert held == []
    assert w.pipeline.active == {}
    w.clock.advance(10.1)
    w.pipeline.expire_submits()
    assert (len(w.pipeline.timeouts), len(w.link.submits)) == (0, 1)


def test_unanswered_submit_times_out_and_fails_over() -> None:
    w = World(submit_timeout_s=2.0)
    offset = w.take(request())
    c1, item1 = w.last_submit()
    w.clock.advance(0.5)
    w.publish(c1, item1)
    w.clock.advance(1.9)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 1  # not yet: the timeout counts from the publish
    w.clock.advance(0.2)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 2  # no answer is not a rejection: asked again
    assert (w.last_submit()[0], w.last_submit()[1].attempt) == (c1, 1)
    w.publish(c1, item1)  # the first ask's batch again (requeued): not this ask's deadline
    w.clock.advance(2.1)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 2
    w.publish(*w.last_submit())
    w.clock.advance(2.1)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 3
    c2, item2 = w.last_submit()
    assert (c2 != c1, item2.attempt) == (True, 2)
    assert w.sink.records == []

    w.accept(c1, item1)  # the late answer of the timed-out attempt
    assert w.sink.records == []
    assert len(w.link.submits) == 3

    w.accept(c2, item2)
    receipt = only_receipt(w)
    assert receipt.status == "sent"
    assert receipt.carrier == c2
    assert receipt.failovers == [wire.FailedAttempt(c1, 1, Code.UNKNOWN_ERROR)]
    w.accept(c2, item2)  # a repeated answer writes nothing either
    assert len(w.sink.records) == 1
    assert_done_only_after_ack(w, offset)


def test_result_in_time_cancels_the_timeout() -> None:
    w = World(submit_timeout_s=2.0)
    offset = w.take(request())
    carrier, item = w.last_submit()
    w.publish(carrier, item)
    w.clock.advance(1.0)
    w.accept(carrier, item)
    w.clock.advance(60.0)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 1
    assert only_receipt(w).status == "sent"
    assert w.router.health.breaker(carrier) is Breaker.CLOSED
    assert_done_only_after_ack(w, offset)


def test_last_attempt_timing_out_fails_the_request() -> None:
    w = World(submit_timeout_s=1.0, max_attempts=2)
    offset = w.take(request())
    for _ in range(4):  # each attempt: asked, then asked again
        carrier, item = w.last_submit()
        w.publish(carrier, item)
        w.clock.advance(1.5)
        w.pipeline.expire_submits()
    receipt = only_receipt(w)
    assert (receipt.status, receipt.error_code) == ("failed", Code.UNKNOWN_ERROR)
    assert [f.attempt for f in receipt.failovers] == [1, 2]
    assert_done_only_after_ack(w, offset)


def test_unpublished_submit_never_times_out() -> None:
    w = World(submit_timeout_s=2.0)
    offset = w.take(request())
    carrier, item = w.last_submit()
    w.clock.advance(3600.0)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 1
    assert w.sink.records == []
    assert w.committable() == offset
    w.publish(carrier, item)  # the timeout starts now
    w.clock.advance(2.5)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 2


def test_publish_after_the_answer_arms_no_timeout() -> None:
    w = World(submit_timeout_s=2.0)
    w.take(request())
    carrier, item = w.last_submit()
    w.accept(carrier, item)
    w.publish(carrier, item)
    w.clock.advance(10.0)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 1
    assert len(w.sink.records) == 1


@pytest.mark.parametrize("code", [Code.INVALID_DESTINATION, Code.NO_ROUTE])
def test_a_rejection_that_is_the_messages_fault_never_opens_a_breaker(code: int) -> None:
    w = World(max_attempts=1)
    carrier = twin_decision(w, GB_MULTI).carrier
    for i in range(20):
        w.take(request(id=f"bad-{i}"))
        c, item = w.last_submit()
        assert c == carrier
        w.reject(c, item, code)
    assert w.router.health.breaker(carrier or "") is Breaker.CLOSED


# -- silences that prove nothing ------------------------------------------------------------


def _ask_twice_unanswered(w: World) -> tuple[str, interconnect.SubmitItem]:
    carrier, item = w.last_submit()
    for _ in range(2):
        w.publish(carrier, item)
        w.clock.advance(2.5)
        w.pipeline.expire_submits()
    return carrier, item


def test_no_failover_while_the_silent_carrier_is_offline() -> None:
    """The carrier may have the message (its result lost as it died): asked again once it
    is back, never moved to a second carrier while in doubt."""
    w = World(submit_timeout_s=2.0)
    w.take(request(id="doubt"))
    carrier, item = w.last_submit()
    w.pipeline.on_status(carrier, False)  # its last-will: gone with the submit
    _ask_twice_unanswered(w)
    assert {c for c, _ in w.link.submits} == {carrier}
    w.pipeline.on_status(carrier, True)
    w.publish(carrier, item)
    w.clock.advance(2.5)
    w.pipeline.expire_submits()
    assert {c for c, _ in w.link.submits} == {carrier}  # announced after the ask: again
    w.accept(carrier, item)
    assert only_receipt(w).carrier == carrier


def test_a_reconnected_link_makes_a_silence_inconclusive() -> None:
    w = World(submit_timeout_s=2.0)
    w.take(request(id="link"))
    carrier, item = w.last_submit()
    w.publish(carrier, item)
    w.clock.advance(2.5)
    w.pipeline.expire_submits()  # first silence: asked again
    w.publish(*w.last_submit())
    w.pipeline.on_changed(())  # the MQTT link came back: that answer may have been lost
    w.clock.advance(2.5)
    w.pipeline.expire_submits()
    assert [c for c, _ in w.link.submits] == [carrier] * 3  # asked again, not failed over
    w.publish(*w.last_submit())
    w.clock.advance(2.5)
    w.pipeline.expire_submits()  # a silence on a steady link: that carrier has failed
    assert len({c for c, _ in w.link.submits}) == 2


def test_doubt_ends_at_the_hold_limit() -> None:
    w = World(submit_timeout_s=2.0)
    w.take(request(id="gone"))
    carrier, _ = w.last_submit()
    w.pipeline.on_status(carrier, False)
    start = w.clock.now
    while {c for c, _ in w.link.submits} == {carrier}:
        assert w.clock.now - start < 100, "never failed over"
        w.publish(*w.last_submit())
        w.clock.advance(2.5)
        w.pipeline.expire_submits()
    assert w.clock.now - start >= w.pipeline.hold_limit_s


# -- which ask a rejection answers ---------------------------------------------------------


def test_a_rejection_of_an_earlier_ask_waits_for_the_last_ask() -> None:
    """A timed-out submit is asked again with the same id; the carrier may reject the
    first ask and accept the second, so only the last ask's answer moves the message."""
    w = World(submit_timeout_s=2.0)
    w.take(request())
    c1, first = w.last_submit()
    w.publish(c1, first)
    w.clock.advance(2.1)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 2
    again = w.last_submit()[1]
    assert (again.id, again.attempt) == (first.id, first.attempt)
    assert again.ask != first.ask
    w.publish(c1, again)

    w.reject(c1, first, Code.UNKNOWN_ERROR)  # the late answer of the first ask
    assert len(w.link.submits) == 2, "failed over while the last ask was open"
    w.accept(c1, again)
    receipt = only_receipt(w)
    assert (receipt.status, receipt.carrier, receipt.failovers) == ("sent", c1, [])


def test_a_rejection_of_the_last_ask_fails_over() -> None:
    w = World(submit_timeout_s=2.0)
    w.take(request())
    c1, first = w.last_submit()
    w.publish(c1, first)
    w.clock.advance(2.1)
    w.pipeline.expire_submits()
    c1_again, again = w.last_submit()
    w.publish(c1_again, again)
    w.reject(c1, again, Code.UNKNOWN_ERROR)
    assert len(w.link.submits) == 3
    c2, item2 = w.last_submit()
    assert (c2 != c1, item2.attempt) == (True, 2)


def test_a_revoked_owners_late_rejection_never_moves_the_next_owners_message() -> None:
    """The partition moves away and back: the message is resumed at its logged carrier
    (a new ask of the same attempt); the old ask's rejection must not fail it over, or the
    carrier that accepts the new ask and the next carrier would both send it."""
    w = World(submit_timeout_s=2.0)
    w.take(request())
    c1, old = w.last_submit()
    log = [record for record, _ in w.sink.attempts]  # the durable attempts log
    w.tracker.forget(PARTITION)
    w.pipeline.forget({PARTITION_NO})
    w.pipeline.restore(PARTITION_NO, log)
    w.take(request())
    c1_resumed, new = w.last_submit()
    assert (c1_resumed, new.attempt) == (c1, old.attempt)

    w.reject(c1, old, Code.UNKNOWN_ERROR)
    assert len(w.link.submits) == 2, "the old owner's answer moved the new message"
    w.accept(c1, new)
    receipt = w.sink.outcomes[-1].receipt
    assert receipt is not None
    assert (receipt.status, receipt.carrier) == ("sent", c1)
