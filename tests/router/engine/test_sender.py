"""The request's ``from`` (sender id) goes to the carrier with every submit and into every
receipt the pipeline writes: sent, failed, a repeat's answer, and the delivered or
undelivered receipt written from the carrier's report (which echoes it)."""

from __future__ import annotations

import msgspec
import pytest

from router.contracts import interconnect, wire
from router.contracts.codes import Code
from tests.router.engine.fakes import ES_NONE, GB_MULTI, World, request

SENDER = "+15005550006"


def test_the_sender_goes_to_the_carrier_and_into_the_sent_receipt() -> None:
    w = World()
    w.take(request("m1", GB_MULTI, **{"from": SENDER}))
    carrier, item = w.last_submit()
    assert item.sender == SENDER
    w.publish(carrier, item)
    w.accept(carrier, item)
    [receipt] = w.sink.receipts
    assert (receipt.status, receipt.sender) == ("sent", SENDER)
    assert msgspec.json.decode(wire.ENCODER.encode(receipt))["from"] == SENDER


def test_every_attempt_carries_the_sender() -> None:
    w = World()
    w.take(request("m1", GB_MULTI, **{"from": "ACME"}))
    carrier, first = w.last_submit()
    w.publish(carrier, first)
    w.reject(carrier, first, Code.UNKNOWN_ERROR)
    _, second = w.last_submit()
    assert second.attempt == 2
    assert [item.sender for _, item in w.link.submits] == ["ACME", "ACME"]


def test_a_refused_request_keeps_its_sender_in_the_failed_receipt() -> None:
    w = World()
    w.take(request("m1", ES_NONE, **{"from": "ACME"}))
    [receipt] = w.sink.receipts
    assert (receipt.status, receipt.sender) == ("failed", "ACME")


def test_a_failure_after_the_last_attempt_keeps_the_sender() -> None:
    w = World(max_attempts=1)
    w.take(request("m1", GB_MULTI, **{"from": "ACME"}))
    carrier, item = w.last_submit()
    w.publish(carrier, item)
    w.reject(carrier, item, Code.UNKNOWN_ERROR)
    [receipt] = w.sink.receipts
    assert (receipt.status, receipt.sender) == ("failed", "ACME")


def test_a_repeat_is_answered_with_the_sender_it_came_with() -> None:
    w = World()
    w.take(request("m1", GB_MULTI, **{"from": "ACME"}))
    carrier, item = w.last_submit()
    w.publish(carrier, item)
    w.accept(carrier, item)
    w.sink.ack_all()
    w.take(request("m1", GB_MULTI, **{"from": "ACME"}))
    assert len(w.link.submits) == 1  # answered, not sent again
    assert [(r.status, r.sender) for r in w.sink.receipts] == [("sent", "ACME")] * 2


def test_a_request_without_a_sender_sends_none() -> None:
    w = World()
    w.take(request("m1", GB_MULTI))
    carrier, item = w.last_submit()
    assert item.sender == ""
    assert "sender" not in msgspec.msgpack.decode(interconnect.SUBMIT_BATCH.encode(
        interconnect.SubmitBatch("", "r", [item])))["items"][0]  # fmt: skip
    w.publish(carrier, item)
    w.accept(carrier, item)
    [receipt] = w.sink.receipts
    assert receipt.sender is None


@pytest.mark.parametrize(("echoed", "expected"), [("ACME", "ACME"), ("", None)])
@pytest.mark.parametrize("status", ["delivered", "undelivered"])
def test_a_report_s_sender_goes_into_its_receipt(
    status: str, echoed: str, expected: str | None
) -> None:
    w = World()
    report = interconnect.DeliveryReport(
        id="m1",
        carrier="gb-ee",
        route="direct",
        status=status,  # type: ignore[arg-type]
        ts=w.wall.ms,
        code=None if status == "delivered" else Code.UNREACHABLE_HANDSET,
        sender=echoed,
    )
    w.pipeline.on_reports("host-1", [report])
    [receipt] = w.sink.receipts
    assert (receipt.status, receipt.sender) == (status, expected)
