"""What carriers tell the pipeline besides submit results: delivery reports (receipts
acknowledged once durable, health fed per country) and status (offline opens the breaker,
online lets one probe through)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from router.contracts import interconnect
from router.contracts.codes import Code
from router.core.health import Breaker
from tests.router.engine.fakes import (
    FR_SINGLE,
    GB_MULTI,
    US_MULTI,
    World,
    carriers_reaching,
    request,
)
from tests.router.engine.pipeline_world import (
    KIND,
    assert_done_only_after_ack,
    only_receipt,
    twin_decision,
)

# -- delivery reports -----------------------------------------------------------------------


def report(carrier: str, status: str, **fields: Any) -> interconnect.DeliveryReport:
    values: dict[str, Any] = {
        "id": "m1",
        "carrier": carrier,
        "route": KIND[carrier],
        "status": status,
        "ts": 1_750_000_005_000,
        "account": "acme",
        "price": 0.5,  # what the carrier claims: the receipt takes the router's quote
        "quote": 0.0123,
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
    assert w.tracker.in_flight == 0  # reports hold no offset, even before they are durable
    w.sink.ack_all()
    assert w.link.report_acks == [("host-1", "gb-ee", "m1")]
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


# -- carrier status ---------------------------------------------------------------------


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
