"""No record stops the pipeline: whatever a record holds, it ends as one dead letter
(bytes unchanged) or one receipt with a code, and the pipeline goes on."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.contracts import wire
from tests.router.engine.fakes import GB_MULTI, World, request

POISON_VALIDITY = (
    b'{"id":"p1","to":"+447911123456","body":"x","created_at":1700000000000,"validity_s":1e306}'
)
POISON_TO = msgspec.json.encode({"id": "p2", "to": "\u0080" * 6_000_000, "body": "x"})


def outcome_of(w: World, offset: int) -> tuple[str, Any]:
    """('dead', reason) or (status, code) of the one outcome that completed ``offset``."""
    (record,) = w.tracker.done_by[("sms.requests/0", offset)]
    assert record is not None
    if record.receipt is None:
        return "dead", dict(record.headers)[wire.DLQ_REASON].split(b":")[0].decode()
    return record.receipt.status, record.receipt.error_code


def test_a_validity_of_1e306_is_a_dead_letter_not_a_crash() -> None:
    w = World()
    offset = w.take(POISON_VALIDITY)
    w.sink.ack_all()
    assert outcome_of(w, offset) == ("dead", "invalid_field")
    assert w.sink.dead_letters[0].value == POISON_VALIDITY


def test_a_six_megabyte_number_fails_with_a_small_receipt() -> None:
    w = World()
    offset = w.take(POISON_TO)
    w.sink.ack_all()
    assert outcome_of(w, offset) == ("failed", 21211)
    (receipt,) = w.sink.receipts
    assert len(wire.ENCODER.encode(receipt)) < 1000


def test_the_pipeline_goes_on_after_poison() -> None:
    w = World()
    w.take(POISON_VALIDITY)
    w.take(POISON_TO)
    w.take(request(id="after", to=GB_MULTI))
    assert [item.id for _, item in w.link.submits] == ["after"]


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["id", "to", "body", "account", "from", "class", "max_price", "validity_s", "created_at"]
plausible = {
    "id": st.text(min_size=0, max_size=140),
    "to": st.sampled_from([GB_MULTI, "+44 7700 900123", "+12", "", "+" + "9" * 20, "447700900123"])
    | st.text(max_size=20),
    "body": st.text(max_size=50) | st.just("x" * 1601),
    "class": st.sampled_from(["otp", "transactional", "marketing", "bulk"]),
    "max_price": st.floats(min_value=-1, max_value=2000, allow_nan=False),
    "validity_s": st.floats(min_value=-1, max_value=1e307, allow_nan=False),
    "created_at": st.integers(min_value=-(2**64), max_value=2**64),
}
requests_ = st.fixed_dictionaries(
    {},
    optional={f: (plausible.get(f, json_values) | json_values) for f in FIELDS},
)
raw = st.one_of(
    requests_.map(msgspec.json.encode),
    st.binary(max_size=64),
    json_values.map(msgspec.json.encode),
    st.none(),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(raw, min_size=1, max_size=12))
def test_any_record_gets_exactly_one_outcome_and_nothing_raises(
    records: list[bytes | None],
) -> None:
    w = World(max_attempts=2)
    offsets = [w.take(value) for value in records]
    # Let everything finish: carriers accept whatever was submitted, Kafka acks all.
    for _ in range(5):
        for carrier, item in list(w.link.submits):
            w.accept(carrier, item)
        w.clock.advance(w.pipeline.hold_limit_s + 1)
        w.pipeline.retry_held()
        w.sink.ack_all()
    for offset in offsets:
        assert len(w.tracker.done_by.get(("sms.requests/0", offset), [])) == 1
    assert w.tracker.in_flight == 0
    assert w.committable() == offsets[-1] + 1
    assert w.metrics.registry.get_sample_value("supernet_internal_errors_total") == 0.0
    for record in w.sink.records:
        if record.receipt is not None:
            assert len(wire.ENCODER.encode(record.receipt)) < 4096
        for _, value in record.headers:
            assert len(value) < 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"id":"a","to":"+447700900123","body":"x","validity_s":-1}', ("dead", "invalid_field")),
        (
            b'{"id":"a","to":"+447700900123","body":"x","max_price":1e400}',
            ("dead", "invalid_field"),
        ),
        (b'{"id":"a","to":"+447700900123","body":"x","created_at":1e3}', ("dead", "invalid_field")),
        (b'{"id":"a","to":"+447700900123","body":{"x":1}}', ("dead", "invalid_field")),
        (b'{"id":"","to":"+447700900123","body":"x"}', ("dead", "invalid_field")),
        (b'{"to":"+447700900123","body":"x"}', ("dead", "missing_field")),
        (b'{"id":"a","to":"+447700900123","body":""}', ("failed", 21602)),
        (b'{"id":"a","to":"+447700900123","body":"x","max_price":0}', ("failed", 21618)),
    ],
)
def test_hostile_fields(value: bytes, expected: tuple[str, Any]) -> None:
    w = World()
    offset = w.take(value)
    w.sink.ack_all()
    assert outcome_of(w, offset) == expected
