"""The pipeline's intake (``router.engine.pipeline.Pipeline``), driven by fakes: records
that cannot be decoded go to the dead letter unchanged, refused and expired requests get a
``failed`` receipt, routable ones are submitted and ``sent``, and an internal error still
gives the record one outcome.

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

from router.contracts import interconnect, wire
from router.contracts.codes import Code
from router.core.decision import Decision
from tests.router.engine.fakes import (
    ES_NONE,
    FR_SINGLE,
    GB_MULTI,
    PARTITION_NO,
    TOPIC,
    US_MULTI,
    Record,
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


def test_example_destinations_are_what_the_tests_assume() -> None:
    gb = {"gb-ee", "gb-o2", "agg-global", "agg-premium", "agg-budget"}
    assert carriers_reaching(GB_MULTI) == gb
    assert carriers_reaching(US_MULTI) == {"us-att", "us-tmobile", "agg-global", "agg-premium"}
    assert carriers_reaching(FR_SINGLE) == {"agg-premium"}
    assert carriers_reaching(ES_NONE) == set()


# -- undecodable input ------------------------------------------------------------------

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


# -- refusals -----------------------------------------------------------------------------

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


# -- the happy path ---------------------------------------------------------------------


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
        ask=item.ask,  # a number of the pipeline's own choosing
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
    assert receipt.submitted_ts == item.ts == receipt.ts - 300  # when it went to the carrier
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


def test_the_carrier_gets_the_normalised_number() -> None:
    w = World()
    w.take(request(to="+44 7700-900 123"))
    _, item = w.last_submit()
    assert item.to == GB_MULTI


# -- validity -------------------------------------------------------------------------------


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


# -- internal errors --------------------------------------------------------------------


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
