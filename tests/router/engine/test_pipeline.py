"""The worker's message state machine (``router.engine.pipeline.Pipeline``) driven by fakes.

A real ``Router`` on the example network decides; the fakes stand in for Kafka (a sink
that acknowledges only when the test says so), the carrier link and both clocks. Expected
prices and candidate carriers are read from the example decks' CSV files, not from the
router's decisions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.contracts import interconnect, wire
from router.contracts.codes import Code
from router.core.decision import Decision
from router.core.health import Breaker
from router.core.network import example_network
from router.core.policy import CLASS_INDEX
from router.core.throttle import bucket_params
from router.engine import attempts
from router.engine.attempts import AttemptRecord
from tests.router.engine.fakes import (
    ES_NONE,
    FR_SINGLE,
    GB_MULTI,
    PARTITION,
    PARTITION_NO,
    TOPIC,
    US_MULTI,
    Record,
    World,
    carriers_reaching,
    deck_price,
    new_router,
    request,
)

NETWORK: dict[str, Any] = msgspec.json.decode((example_network() / "network.json").read_bytes())
KIND = {c["id"]: c["kind"] for c in NETWORK["carriers"]}
THROUGHPUT = {c["id"]: c["throughput_mps"] for c in NETWORK["carriers"]}


def twin_decision(w: World, to: str, body: str = "hello", cls: str = "transactional") -> Decision:
    """What a fresh router in the same state as ``w``'s would decide (before any submit)."""
    return new_router().decide(to, body, CLASS_INDEX[cls], None, w.clock.now)


def saturate(w: World, carrier: str) -> None:
    """Take every token of ``carrier``'s bucket at the current fake time."""
    interval, tau = bucket_params(w.router.table.carriers[carrier])
    taken = 0
    while w.router.throttle.take(carrier, interval, tau, w.clock.now):
        taken += 1
    assert taken >= 1


def only_receipt(w: World) -> wire.Receipt:
    assert len(w.sink.records) == 1, w.sink.records
    receipt = w.sink.records[0].receipt
    assert receipt is not None
    return receipt


def assert_done_only_after_ack(w: World, offset: int) -> None:
    """The record's offset is still pending; acknowledging the outcome releases it."""
    assert w.committable() == offset
    assert w.tracker.in_flight == 1
    w.sink.ack_all()
    assert w.committable() == offset + 1
    assert w.tracker.in_flight == 0


def test_example_destinations_are_what_the_tests_assume() -> None:
    gb = {"gb-ee", "gb-o2", "agg-global", "agg-premium", "agg-budget"}
    assert carriers_reaching(GB_MULTI) == gb
    assert carriers_reaching(US_MULTI) == {"us-att", "us-tmobile", "agg-global", "agg-premium"}
    assert carriers_reaching(FR_SINGLE) == {"agg-premium"}
    assert carriers_reaching(ES_NONE) == set()


# -- 1. undecodable input ------------------------------------------------------------------

RANDOM_MB = random.Random(7).randbytes(1 << 20)

UNDECODABLE = [
    pytest.param(b"hello, world", "not_json", id="not-json"),
    pytest.param(b"", "not_json", id="empty-bytes"),
    pytest.param(b"[]", "invalid_field", id="array"),
    pytest.param(b'{"to": "+447700900123", "body": "hi"}', "missing_field", id="missing-id"),
    pytest.param(request(id=""), "invalid_field", id="empty-id"),
    pytest.param(request(max_price="5"), "invalid_field", id="price-as-string"),
    pytest.param(
        b'{"id": 7, "to": "+447700900123", "body": "hi"}', "invalid_field", id="id-as-number"
    ),
    pytest.param(request(**{"class": "spam"}), "invalid_field", id="unknown-class"),
    pytest.param(request(validity_s=0), "invalid_field", id="zero-validity"),
    pytest.param(b"\xff\xfe\x00garbage", "not_json", id="bad-utf8-outside-strings"),
    pytest.param(
        b'{"id": "m1", "to": "+447700900123", "body": "caf\xe9"}', "bad_utf8", id="bad-utf8-in-body"
    ),
    pytest.param(
        b'{"id": "m1\xc3", "to": "+447700900123", "body": "hi"}', "bad_utf8", id="bad-utf8-in-id"
    ),
    pytest.param(None, "not_json", id="none-value"),
    pytest.param(RANDOM_MB, None, id="1MB-random-bytes"),
    pytest.param(
        b'{"id": "m1", "body": "' + b"\x00" * (1 << 20), "not_json", id="1MB-unterminated-string"
    ),
    pytest.param(
        b'{"id": "m1", "to": "+1", "body": "x", "extra": ' + b"[" * 100_000,
        "too_deep",
        id="deeply-nested",
    ),
]


@pytest.mark.parametrize(("value", "reason"), UNDECODABLE)
def test_undecodable_input_goes_to_the_dead_letter_unchanged(
    value: bytes | None, reason: str | None
) -> None:
    w = World()
    w.take(b"first")  # an earlier dead letter, so offsets are not trivially the first
    w.sink.ack_all()
    offset = w.take(value, key=b"+447700900123")
    assert w.link.submits == []
    assert len(w.sink.dead_letters) == 2
    dead = w.sink.dead_letters[-1]
    assert dead.value == value
    assert dead.key == b"+447700900123"
    headers = dict(dead.headers)
    assert set(headers) == {wire.DLQ_REASON, wire.DLQ_TOPIC, wire.DLQ_PARTITION, wire.DLQ_OFFSET}
    assert headers[wire.DLQ_TOPIC] == TOPIC.encode()
    assert headers[wire.DLQ_PARTITION] == str(PARTITION_NO).encode()
    assert headers[wire.DLQ_OFFSET] == str(offset).encode()
    label = headers[wire.DLQ_REASON].decode().split(":", 1)[0]
    if reason is not None:
        assert label == reason
    assert len(headers[wire.DLQ_REASON]) > len(label) + 2  # the decoder's own words follow
    assert w.metrics.registry.get_sample_value(
        "supernet_dead_lettered_total", {"reason": label}
    ) == (2.0 if label == "not_json" else 1.0)
    assert_done_only_after_ack(w, offset)


def test_a_dead_letter_does_not_let_the_commit_pass_an_earlier_request() -> None:
    w = World()
    first = w.take(request(to=GB_MULTI))
    w.take(b"garbage")
    w.sink.ack_all()
    assert w.committable() == first
    carrier, item = w.last_submit()
    w.accept(carrier, item)
    assert w.committable() == first
    w.sink.ack_all()
    assert w.committable() == first + 2


# -- 2. refusals -----------------------------------------------------------------------------

CHEAPEST_GB = min(p for c in carriers_reaching(GB_MULTI) if (p := deck_price(c, GB_MULTI)))

REFUSALS = [
    pytest.param(request(to="+123"), 21211, id="too-short"),
    pytest.param(request(to="hello"), 21211, id="not-a-number"),
    pytest.param(request(to=""), 21211, id="empty-number"),
    pytest.param(request(to="+3312345678"), 21211, id="wrong-length-for-country"),
    pytest.param(request(body=""), 21602, id="empty-body"),
    pytest.param(request(body="a" * 1601), 21617, id="body-over-1600"),
    pytest.param(request(body="✓" * 1601), 21617, id="ucs2-body-over-1600"),
    pytest.param(request(to=ES_NONE), 21612, id="no-route"),
    pytest.param(request(max_price=CHEAPEST_GB * 0.99), 21618, id="max-price-too-low"),
    pytest.param(request(max_price=0), 21618, id="max-price-zero"),
]


@pytest.mark.parametrize(("value", "code"), REFUSALS)
def test_refused_request_gets_a_failed_receipt(value: bytes, code: int) -> None:
    w = World()
    offset = w.take(msgspec.json.encode({**msgspec.json.decode(value), "account": "acme"}))
    assert w.link.submits == []
    receipt = only_receipt(w)
    assert receipt.id == "m1"
    assert receipt.account == "acme"
    assert receipt.status == "failed"
    assert receipt.error_code == code
    assert receipt.error_message
    assert receipt.carrier is None
    assert receipt.attempt == 0
    assert receipt.failovers == []
    assert receipt.ts == w.wall.ms
    assert w.sink.records[0].on_durable is not None

    def counted() -> float | None:
        return w.metrics.registry.get_sample_value(
            "supernet_receipts_total", {"status": "failed", "code": str(code)}
        )

    assert not counted()  # receipts count once Kafka has them, not when handed over
    assert_done_only_after_ack(w, offset)
    assert counted() == 1.0


def test_max_price_exactly_the_cheapest_route_is_routed_there() -> None:
    w = World()
    w.take(request(max_price=CHEAPEST_GB))
    carrier, item = w.last_submit()
    assert deck_price(carrier, GB_MULTI) == CHEAPEST_GB
    assert item.price * item.segments <= CHEAPEST_GB
    assert w.sink.records == []


# -- 3. the happy path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "segments", "encoding"),
    [
        pytest.param("a" * 200, math.ceil(200 / 153), "GSM-7", id="gsm7-two-parts"),
        pytest.param("✓" * 71, math.ceil(71 / 67), "UCS-2", id="ucs2-two-parts"),
        pytest.param("hello", 1, "GSM-7", id="gsm7-single"),
    ],
)
@pytest.mark.parametrize("to", [GB_MULTI, US_MULTI, FR_SINGLE])
def test_routable_request_is_submitted_and_sent(
    to: str, body: str, segments: int, encoding: str
) -> None:
    w = World()
    expected = twin_decision(w, to, body, "otp")
    offset = w.take(
        request(id="abc-1", to=to, body=body, account="acme", **{"class": "otp"}), key=b"k"
    )
    assert len(w.link.submits) == 1
    carrier, item = w.link.submits[0]
    assert carrier == expected.carrier
    if to == FR_SINGLE:
        assert carrier == "agg-premium"  # the only carrier that reaches France
    assert item == interconnect.SubmitItem(
        id="abc-1",
        to=to,
        carrier=carrier,
        account="acme",
        segments=segments,
        price=deck_price(carrier, to) or -1.0,
        attempt=1,
        encoding=encoding,
        country={GB_MULTI: "GB", US_MULTI: "US", FR_SINGLE: "FR"}[to],
        ts=w.wall.ms,
    )
    assert w.sink.records == []
    assert w.committable() == offset

    billed = item.price + 0.0011  # the carrier bills what it bills, not what the deck said
    w.clock.advance(0.3)
    w.wall.ms += 300
    w.accept(carrier, item, price=billed)
    receipt = only_receipt(w)
    assert receipt.status == "sent"
    assert receipt.id == "abc-1"
    assert receipt.account == "acme"
    assert receipt.carrier == carrier
    assert receipt.route == KIND[carrier]
    assert receipt.attempt == 1
    assert receipt.segments == segments
    assert receipt.encoding == encoding
    assert receipt.price == pytest.approx(billed * segments)
    assert receipt.currency == "USD"
    assert receipt.error_code is None
    assert receipt.failovers == []
    assert receipt.ts == w.wall.ms
    assert (
        w.metrics.registry.get_sample_value(
            "supernet_routed_total", {"carrier": carrier, "kind": KIND[carrier]}
        )
        == 1.0
    )
    assert w.metrics.registry.get_sample_value(
        "supernet_cost_usd_total", {"kind": KIND[carrier]}
    ) == pytest.approx(billed * segments)
    assert_done_only_after_ack(w, offset)


def test_results_for_unknown_submits_are_ignored() -> None:
    w = World()
    w.take(request())
    carrier, item = w.last_submit()
    other = interconnect.SubmitResult(id="other", accepted=True, attempt=1, price=1.0)
    later = interconnect.SubmitResult(id=item.id, accepted=True, attempt=2, price=1.0)
    w.pipeline.on_results(carrier, [other, later])
    assert w.sink.records == []
    w.accept(carrier, item)
    assert only_receipt(w).status == "sent"


# -- 4. failover -----------------------------------------------------------------------------


def test_rejection_fails_over_to_the_next_carrier() -> None:
    w = World(max_attempts=3)
    expected = twin_decision(w, GB_MULTI)
    offset = w.take(request(to=GB_MULTI))
    c1, item1 = w.last_submit()
    w.reject(c1, item1, Code.QUEUE_OVERFLOW)
    assert w.sink.records == []
    assert len(w.link.submits) == 2
    c2, item2 = w.last_submit()
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


def test_an_internal_error_after_the_outcome_is_not_written_twice() -> None:
    """If handling fails after the outcome was handed to the sink, the request is not
    also dead-lettered, and the worker goes on (the error is counted)."""
    w = World()

    def broken(receipt: wire.Receipt, on_durable: Callable[[], None] | None) -> None:
        w.sink.records.append(Record(receipt, on_durable))
        raise RuntimeError("sink failed after taking the receipt")

    w.sink.receipt = broken  # type: ignore[method-assign]
    w.take(request(to="+4477"))  # refused: a failed receipt, then the error
    assert len(w.sink.receipts) == 1
    assert w.sink.dead_letters == []
    assert w.metrics.registry.get_sample_value("supernet_internal_errors_total") == 1.0


def test_an_internal_error_before_the_outcome_dead_letters_the_request() -> None:
    w = World()

    class Broken:
        health = w.router.health

        def decide(self, *args: Any, **kwargs: Any) -> Decision:
            raise ZeroDivisionError("a bug in the routing core")

    w.pipeline.router = Broken()  # type: ignore[assignment]
    value = request(id="bug")
    offset = w.take(value)
    assert w.sink.receipts == []
    (dead,) = w.sink.dead_letters
    assert dead.value == value
    headers = dict(dead.headers)
    assert headers[wire.DLQ_REASON].startswith(b"internal: ZeroDivisionError")
    assert headers[wire.DLQ_ERROR] == b"ZeroDivisionError"
    assert_done_only_after_ack(w, offset)
    w.pipeline.router = w.router
    w.take(request(id="next"))  # the worker goes on
    assert len(w.link.submits) == 1


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


# -- 5. submit timeouts ------------------------------------------------------------------------


def test_unanswered_submit_times_out_and_fails_over() -> None:
    w = World(submit_timeout_s=2.0)
    offset = w.take(request())
    c1, item1 = w.last_submit()
    w.clock.advance(0.5)
    w.publish(c1, [item1][0])
    w.clock.advance(1.9)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 1  # not yet: the timeout counts from the publish
    w.clock.advance(0.2)
    w.pipeline.expire_submits()
    assert len(w.link.submits) == 2  # no answer is not a rejection: asked again
    assert (w.last_submit()[0], w.last_submit()[1].attempt) == (c1, 1)
    w.publish(c1, item1)
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


# -- 6. validity -------------------------------------------------------------------------------


def test_expired_request_fails_without_a_submit() -> None:
    w = World()
    offset = w.take(request(created_at=w.wall.ms - 10_001, validity_s=10))
    assert w.link.submits == []
    receipt = only_receipt(w)
    assert (receipt.status, receipt.error_code) == ("failed", Code.EXPIRED)
    assert receipt.error_message
    assert_done_only_after_ack(w, offset)


def test_request_within_its_validity_is_routed() -> None:
    w = World()
    w.take(request(created_at=w.wall.ms - 9_000, validity_s=10))
    assert len(w.link.submits) == 1
    assert w.sink.records == []


def test_validity_without_created_at_never_expires() -> None:
    w = World()
    w.wall.ms += 10**9
    w.take(request(validity_s=0.001))
    assert len(w.link.submits) == 1


# -- 7. delivery reports -----------------------------------------------------------------------


def report(carrier: str, status: str, **fields: Any) -> interconnect.DeliveryReport:
    values: dict[str, Any] = {
        "id": "m1",
        "carrier": carrier,
        "route": KIND[carrier],
        "status": status,
        "ts": 1_750_000_005_000,
        "account": "acme",
        "price": 0.0123,
        "segments": 3,
        "attempt": 2,
        "encoding": "UCS-2",
        "country": "GB",
        "submitted_ts": 1_750_000_001_000,
    }
    return interconnect.DeliveryReport(**(values | fields))


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("delivered", None),
        ("undelivered", Code.UNREACHABLE_HANDSET),
        ("undelivered", Code.FILTERED),
    ],
)
def test_delivery_report_becomes_a_receipt(status: str, code: int | None) -> None:
    w = World()
    w.pipeline.on_reports("host-1", [report("gb-ee", status, code=code)])
    receipt = only_receipt(w)
    assert w.link.report_acks == []  # acknowledged to the carrier only once durable
    w.sink.ack_all()
    assert w.link.report_acks == [("host-1", "gb-ee", "m1")]
    assert w.tracker.in_flight == 0  # reports hold no offset
    assert receipt.status == status
    assert receipt.id == "m1"
    assert receipt.account == "acme"
    assert receipt.carrier == "gb-ee"
    assert receipt.route == "direct"
    assert receipt.attempt == 2
    assert receipt.segments == 3
    assert receipt.encoding == "UCS-2"
    assert receipt.price == pytest.approx(0.0123 * 3)
    assert receipt.error_code == code
    assert (receipt.error_message is not None) == (code is not None)
    assert receipt.ts == w.wall.ms
    assert w.tracker.in_flight == 0


def test_undelivered_reports_lower_the_carrier_estimate_for_that_country() -> None:
    w = World()
    first = twin_decision(w, US_MULTI).carrier
    assert first is not None
    spec = w.router.table.carriers[first]
    before_us = w.router.health.estimate(spec, "US")
    before_pr = w.router.health.estimate(spec, "PR")
    assert before_us == (spec.delivery_rate, spec.latency_s)
    bad = report(first, "undelivered", country="US", code=Code.UNREACHABLE_HANDSET)
    w.pipeline.on_reports(first, [bad] * 40)
    # Health reaches the estimate and the ranking within refresh_s, at the next decision.
    w.clock.advance(w.router.health.config.refresh_s + 0.5)
    w.take(request(to=US_MULTI))
    rate, _ = w.router.health.estimate(spec, "US")
    assert rate < before_us[0] - 0.1  # forty failures in a row are a material drop
    assert w.router.health.estimate(spec, "PR") == before_pr
    assert w.router.health.breaker(first) is Breaker.CLOSED  # 40 < collapse minimum
    assert w.last_submit()[0] != first


def test_delivered_reports_feed_the_latency_estimate() -> None:
    w = World()
    spec = w.router.table.carriers["gb-ee"]
    latency_s = 30.0
    rep = report("gb-ee", "delivered", submitted_ts=1_000, ts=1_000 + int(latency_s * 1000))
    w.pipeline.on_reports("gb-ee", [rep] * 20)
    w.clock.advance(w.router.health.config.refresh_s + 0.5)
    w.take(request(to=GB_MULTI))
    rate, latency = w.router.health.estimate(spec, "GB")
    assert rate > spec.delivery_rate
    assert spec.latency_s < latency < latency_s


def test_report_feeds_the_health_of_the_carrier_it_names() -> None:
    w = World()
    w.pipeline.on_reports("host-1", [report("gb-ee", "undelivered", code=30003)])
    assert only_receipt(w).carrier == "gb-ee"
    assert w.router.health.reports("gb-ee", "GB") == 1


def test_report_naming_an_unknown_carrier_is_written_but_feeds_no_health() -> None:
    w = World()
    rep = msgspec.structs.replace(report("gb-ee", "undelivered", code=30003), carrier="x")
    w.pipeline.on_reports("gb-ee", [rep])
    assert only_receipt(w).status == "undelivered"
    assert w.router.health.reports("gb-ee", "GB") == 0
    assert w.router.health.reports("x", "GB") == 0


# -- 8. carrier status ---------------------------------------------------------------------


def test_offline_carrier_opens_its_breaker_and_traffic_moves() -> None:
    w = World()
    first = twin_decision(w, US_MULTI).carrier
    assert first is not None
    w.pipeline.on_status(first, False)
    assert w.router.health.breaker(first) is Breaker.OPEN
    w.take(request(to=US_MULTI))
    carrier, _ = w.last_submit()
    assert carrier != first
    assert carrier in carriers_reaching(US_MULTI)
    w.clock.advance(3600.0)  # an offline carrier stays open however long it takes
    w.take(request(id="m2", to=US_MULTI))
    assert w.last_submit()[0] != first
    w.pipeline.on_status(first, True)
    assert w.router.health.breaker(first) is Breaker.HALF_OPEN


def test_only_carrier_offline_holds_then_fails_with_carrier_unavailable() -> None:
    w = World()
    w.pipeline.on_status("agg-premium", False)
    offset = w.take(request(to=FR_SINGLE))
    assert w.link.submits == []
    assert w.sink.records == []
    assert len(w.pipeline.held) == 1  # waits for the carrier, up to the hold limit
    w.clock.advance(w.pipeline.hold_limit_s - 1)
    w.pipeline.retry_held()
    assert w.sink.records == []
    w.clock.advance(2)
    w.pipeline.retry_held()
    receipt = only_receipt(w)
    assert (receipt.status, receipt.error_code) == ("failed", Code.CARRIERS_UNAVAILABLE)
    assert_done_only_after_ack(w, offset)


def test_held_request_goes_out_when_its_carrier_comes_back() -> None:
    w = World()
    w.pipeline.on_status("agg-premium", False)
    w.take(request(to=FR_SINGLE))
    w.clock.advance(5)
    w.pipeline.on_status("agg-premium", True)
    w.pipeline.retry_held()
    assert [c for c, _ in w.link.submits] == ["agg-premium"]
    assert not w.pipeline.held


def test_status_of_an_unknown_carrier_is_ignored() -> None:
    w = World()
    w.pipeline.on_status("nobody", False)
    assert w.router.health.breaker("nobody") is Breaker.CLOSED
    assert w.router.health.unavailable == set()


def test_failover_to_a_half_open_carrier_takes_its_one_probe() -> None:
    w = World(max_attempts=3)
    expected = twin_decision(w, US_MULTI)
    first, second = expected.carrier, expected.fallbacks()[0].carrier
    w.take(request(id="a", to=US_MULTI))
    assert w.last_submit()[0] == first
    w.pipeline.on_status(second, False)
    w.pipeline.on_status(second, True)
    assert w.router.health.breaker(second) is Breaker.HALF_OPEN
    carrier, item = w.last_submit()
    w.reject(carrier, item, Code.UNKNOWN_ERROR)
    assert w.last_submit()[0] == second  # the probe
    assert w.router.health.breaker(second) is Breaker.PROBING
    w.take(request(id="b", to=US_MULTI))  # goes to first, then fails over past the probing one
    carrier, item = w.last_submit()
    assert carrier == first
    w.reject(carrier, item, Code.UNKNOWN_ERROR)
    assert w.last_submit()[0] not in (first, second)


# -- 9. duplicates ---------------------------------------------------------------------------


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


def test_the_carrier_gets_the_normalised_number() -> None:
    w = World()
    w.take(request(to="+44 7700-900 123"))
    _, item = w.last_submit()
    assert item.to == GB_MULTI


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


# -- 10. held requests -----------------------------------------------------------------------


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


# -- 11. invariants over random event orders ---------------------------------------------------

KINDS = ["gb", "us", "fr", "es", "invalid", "garbage", "expired", "short-lived"]
STATUS_CARRIERS = ["us-att", "agg-premium", "agg-budget"]


def make_request(w: World, kind: str, rid: str) -> bytes:
    """A request of ``kind``; one id is one message (its repeats are the same request)."""
    id = f"{kind}-{rid}"
    to = {"gb": GB_MULTI, "us": US_MULTI, "fr": FR_SINGLE, "es": ES_NONE, "invalid": "+12"}
    if kind == "garbage":
        return b'{"id": "' + id.encode() + b'", "to": 1}'
    if kind == "expired":
        return request(id=id, created_at=w.wall.ms - 60_000, validity_s=1)
    if kind == "short-lived":
        return request(id=id, to=US_MULTI, created_at=w.wall.ms, validity_s=2)
    return request(id=id, to=to[kind])


class Run:
    """One random run: what was taken and answered, and the checks after every step."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.taken: dict[int, tuple[str, str]] = {}  # offset -> (kind, id)
        self.answered: set[int] = set()  # indexes into link.submits
        self.accepted: set[tuple[str, int, str]] = set()  # (id, attempt, carrier)

    def check(self) -> None:
        w = self.w
        done = w.tracker.done_by
        by_record: dict[int, str] = {}
        for (partition, offset), records in done.items():
            assert partition == PARTITION
            assert len(records) == 1, f"offset {offset} marked done {len(records)} times"
            record = records[0]
            assert record is not None, "an offset was marked done outside a Kafka ack"
            assert record.is_outcome
            kind, rid = self.taken[offset]
            # One ack completes several offsets only for repeats of one id (a repeat that
            # came while the original was in flight is answered with it).
            assert by_record.setdefault(id(record), f"{kind}-{rid}") == f"{kind}-{rid}", (
                "one ack completed two different requests"
            )
            if record.receipt is None:
                assert kind == "garbage"
            else:
                assert record.receipt.id == f"{kind}-{rid}"
        open_offsets = [o for o in self.taken if (PARTITION, o) not in done]
        committable = w.committable()
        if open_offsets:
            assert committable is not None
            assert committable <= min(open_offsets)
        assert w.tracker.in_flight == len(open_offsets)
        per_id: dict[str, int] = {}
        for kind, rid in self.taken.values():
            per_id[f"{kind}-{rid}"] = per_id.get(f"{kind}-{rid}", 0) + 1
        outcomes: dict[str, int] = {}
        sent_by: dict[str, set[str]] = {}
        for record in w.sink.outcomes:
            assert record.on_durable is not None
            rid = record.receipt.id if record.receipt else "garbage"
            outcomes[rid] = outcomes.get(rid, 0) + 1
            r = record.receipt
            if r is not None and r.status == "sent":
                assert r.carrier is not None
                assert (r.id, r.attempt, r.carrier) in self.accepted
                assert len(r.failovers) <= r.attempt - 1  # a repeat's answer lists none
                sent_by.setdefault(r.id, set()).add(r.carrier)
        for rid, carriers in sent_by.items():
            assert len(carriers) == 1, f"{rid} sent by {carriers}"
        garbage = sum(1 for kind, _ in self.taken.values() if kind == "garbage")
        assert outcomes.pop("garbage", 0) <= garbage
        for rid, n in outcomes.items():
            assert n <= per_id[rid], f"{rid}: {n} outcomes for {per_id[rid]} requests"
        assert len(w.sink.outcomes) <= len(self.taken)

    def check_final(self, max_attempts: int) -> None:
        w = self.w
        assert w.tracker.in_flight == 0
        assert w.committable() == max(self.taken) + 1
        assert len(w.sink.outcomes) <= len(self.taken)
        ids = {f"{k}-{i}" for k, i in self.taken.values() if k != "garbage"}
        assert {r.receipt.id for r in w.sink.outcomes if r.receipt is not None} == ids
        garbage = sum(1 for k, _ in self.taken.values() if k == "garbage")
        assert len(w.sink.dead_letters) == garbage
        assert len(w.tracker.done_by) == len(self.taken)
        for (_, offset), (record,) in w.tracker.done_by.items():
            kind, _ = self.taken[offset]
            r = record.receipt if record else None
            expected_code = {"es": 21612, "invalid": 21211, "expired": Code.EXPIRED}.get(kind)
            if kind == "garbage":
                assert r is None
            elif expected_code is not None:
                assert r is not None
                assert (r.status, r.error_code) == ("failed", expected_code)
            else:
                assert r is not None
                assert r.status in ("sent", "failed")
                assert r.attempt <= max_attempts


ACTIONS = ["take", "take", "take", "publish", "accept", "reject", "ack", "tick", "status"]
ADVANCE_S = [0.0, 0.001, 0.5, 1.2]  # the submit timeout is 1 s
Step = tuple[str, int, int | None, bool]  # action, which one (modulo), reject code, online

steps = st.lists(
    st.tuples(
        st.sampled_from(ACTIONS),
        st.integers(0, 15),
        st.sampled_from([None, Code.QUEUE_OVERFLOW, Code.UNKNOWN_ERROR]),
        st.booleans(),
    ),
    min_size=5,
    max_size=60,
)
requests = st.lists(  # few ids, so that duplicates in flight are common
    st.tuples(st.sampled_from(["gb", "us", *KINDS]), st.sampled_from(["a", "b"])),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(todo=requests, script=steps, max_attempts=st.integers(1, 3), full=st.booleans())
def test_every_request_gets_one_durable_outcome_whatever_the_order(
    todo: list[tuple[str, str]], script: list[Step], max_attempts: int, full: bool
) -> None:
    """Random interleavings of intake, publishes, answers (accepted, rejected, late or
    repeated), timeouts, carrier status and Kafka acks; then a drain that lets every
    open submit time out and acknowledges everything."""
    w = World(submit_timeout_s=1.0, max_attempts=max_attempts)
    run = Run(w)
    todo = list(todo)
    if full:
        saturate(w, "agg-premium")  # French requests are held until time passes
    for action, n, code, online in script:
        open_submits = [i for i in range(len(w.link.submits)) if i not in run.answered]
        if action == "take" and todo:
            kind, rid = todo.pop(0)
            run.taken[w.take(make_request(w, kind, rid))] = (kind, rid)
        elif action in ("publish", "accept", "reject") and open_submits:
            i = open_submits[n % len(open_submits)]
            carrier, item = w.link.submits[i]
            if action == "publish":
                w.publish(carrier, item)
            elif action == "accept":
                run.answered.add(i)
                run.accepted.add((item.id, item.attempt, carrier))
                w.accept(carrier, item)
            else:
                run.answered.add(i)
                w.reject(carrier, item, code)
        elif action == "ack" and (unacked := w.sink.unacked()):
            w.sink.ack(unacked[n % len(unacked)])
        elif action == "status":
            w.pipeline.on_status(STATUS_CARRIERS[n % len(STATUS_CARRIERS)], online)
        elif action == "tick":
            seconds = ADVANCE_S[n % len(ADVANCE_S)]
            w.clock.advance(seconds)
            w.wall.ms += int(seconds * 1000)
            w.pipeline.expire_submits()
            w.pipeline.retry_held()
        run.check()

    # Drain: take the rest, then let every submit be published and time out.
    for kind, rid in todo:
        run.taken[w.take(make_request(w, kind, rid))] = (kind, rid)
    for carrier in STATUS_CARRIERS:
        w.pipeline.on_status(carrier, True)
    for _ in range(50):
        for carrier, item in w.link.submits:
            w.publish(carrier, item)
        w.clock.advance(2.0)
        w.wall.ms += 2000
        w.pipeline.expire_submits()
        w.pipeline.retry_held()
        w.sink.ack_all()
        run.check()
        if w.tracker.in_flight == 0:
            break
    run.check_final(max_attempts)


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
    w.publish(carrier, item)
    w.pipeline.on_changed(())  # the MQTT link came back: that answer may have been lost
    w.clock.advance(2.5)
    w.pipeline.expire_submits()
    assert [c for c, _ in w.link.submits] == [carrier] * 3  # asked again, not failed over
    w.publish(carrier, item)
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
