"""Attempt tokens: a report is taken only if it echoes, unaltered, an attempt the fleet
signed for the carrier process that sent it; and only once."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.contracts import interconnect
from router.engine.transports.tokens import TOKEN_BYTES, ReplayGuard, Signer

KEY = b"k" * 32
NOW_MS = 1_750_000_000_000


def submit(**fields: Any) -> interconnect.SubmitItem:
    values: dict[str, Any] = {
        "id": "m1", "to": "+447700900123", "carrier": "gb-ee", "account": "acme",
        "segments": 2, "price": 0.0123, "attempt": 1, "encoding": "GSM-7", "country": "GB",
        "ts": NOW_MS - 1000, "sender": "ACME",
    }  # fmt: skip
    return interconnect.SubmitItem(**(values | fields))


def echoed(
    item: interconnect.SubmitItem, token: bytes, **fields: Any
) -> interconnect.DeliveryReport:
    """The report a carrier makes for ``item``, as ``carriers.endpoint`` does."""
    rep = interconnect.DeliveryReport(
        id=item.id, carrier=item.carrier, route="direct", status="delivered", ts=NOW_MS,
        account=item.account, price=item.price, segments=item.segments, attempt=item.attempt,
        encoding=item.encoding, country=item.country, submitted_ts=item.ts,
        sender=item.sender, quote=item.price, token=token,
    )  # fmt: skip
    return msgspec.structs.replace(rep, **fields)


def test_a_report_checks_only_for_the_process_it_was_signed_for() -> None:
    signer = Signer(KEY)
    item = submit()
    token = signer.sign("h1", item)
    assert len(token) == TOKEN_BYTES
    assert signer.check("h1", echoed(item, token))
    assert not signer.check("h2", echoed(item, token))  # foreign: another process
    assert not Signer(b"x" * 32).check("h1", echoed(item, token))  # another fleet's key
    assert not signer.check("h1", echoed(item, b""))  # unsigned
    assert not signer.check("h1", echoed(item, token[:-1] + bytes([token[-1] ^ 1])))


@pytest.mark.parametrize(
    "change",
    [{"id": "m2"}, {"carrier": "gb-o2"}, {"attempt": 2}, {"account": "other"},
     {"segments": 1}, {"quote": 0.0124}, {"encoding": "UCS-2"}, {"country": "FR"},
     {"submitted_ts": NOW_MS}, {"sender": "EVIL"}],
)  # fmt: skip
def test_an_altered_field_fails_the_check(change: dict[str, Any]) -> None:
    signer = Signer(KEY)
    item = submit()
    assert not signer.check("h1", echoed(item, signer.sign("h1", item), **change))


def test_what_the_carrier_may_say_is_not_signed() -> None:
    signer = Signer(KEY)
    item = submit()
    token = signer.sign("h1", item)
    # status, code, billed price, report time and re-sends are the carrier's own word
    rep = echoed(item, token, status="undelivered", code=30003, price=9.9, ts=1, resent=3)
    assert signer.check("h1", rep)


@given(
    id_=st.text(max_size=40), price=st.floats(allow_nan=False), segments=st.integers(1, 10**6),
    sender=st.text(max_size=20),
)  # fmt: skip
def test_any_submit_round_trips_through_a_report(
    id_: str, price: float, segments: int, sender: str
) -> None:
    signer = Signer(KEY)
    item = submit(id=id_, price=price, segments=segments, sender=sender)
    payload = interconnect.SUBMIT_BATCH.encode(interconnect.SubmitBatch("", "r", [item]))
    wire_item = interconnect.SUBMIT_BATCH.decode(payload).items[0]
    token = signer.sign("h1", item)
    assert signer.check("h1", echoed(wire_item, token))


def test_the_guard_takes_a_report_once_and_acknowledges_repeats_once_durable() -> None:
    signer = Signer(KEY)
    guard = ReplayGuard(signer, horizon_s=60.0, capacity=100)
    item = submit()
    rep = echoed(item, signer.sign("h1", item))
    assert guard.admit("h1", rep, NOW_MS) == "new"
    assert guard.admit("h1", rep, NOW_MS) == "pending"  # its receipt is not durable yet
    guard.durable("h1", "gb-ee", "m1")
    assert guard.admit("h1", msgspec.structs.replace(rep, resent=1), NOW_MS) == "repeat"
    assert guard.admit("h2", rep, NOW_MS) == "forged"
    assert guard.admit("h1", rep, item.ts + 60_001) == "stale"


def test_the_guard_forgets_the_oldest_first() -> None:
    signer = Signer(KEY)
    guard = ReplayGuard(signer, horizon_s=60.0, capacity=2)
    reps = []
    for i in range(3):
        item = submit(id=f"m{i}")
        reps.append(echoed(item, signer.sign("h1", item)))
        assert guard.admit("h1", reps[-1], NOW_MS) == "new"
    assert len(guard) == 2
    assert guard.admit("h1", reps[2], NOW_MS) == "pending"
    assert guard.admit("h1", reps[0], NOW_MS) == "new"  # forgotten: taken again


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(b"short")
