"""Endpoint behaviour with a fake clock: throttling, idempotency, rejections, reports."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry

from carriers.endpoint import Endpoint, TokenBucket, mask_number
from carriers.ledger import CarrierLedger, Ledger, register_metrics
from carriers.simulation import CarrierTruth, DestinationTruth
from router.contracts import interconnect
from router.contracts.codes import Code
from tests.carriers.carrier_helpers import spec, truth

GB = "+447700900123"


def endpoint(t: CarrierTruth, prices: dict[str, float] | None = None) -> Endpoint:
    return Endpoint(spec(t.id), t, prices or {"4477": 0.01}, CarrierLedger(t.id), now=0.0)


def item(n: int | str, to: str = GB, attempt: int = 1) -> interconnect.SubmitItem:
    return interconnect.SubmitItem(
        id=f"m{n}", to=to, account="AC1", segments=2, price=0.01, attempt=attempt
    )


def test_token_bucket_caps_and_refills() -> None:
    bucket = TokenBucket(rate=10, burst=10, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(25)) == 10
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert sum(bucket.take(5.0) for _ in range(25)) == 10  # never more than the burst


def test_accepted_submit_gets_result_then_report_with_receipt_fields() -> None:
    e = endpoint(truth("c1"))
    out = e.submit(item(1), now=100.0, wall_ms=1_000_000)
    assert out is not None
    assert out.result.accepted
    assert out.result.code is None
    assert out.result.price == 0.01
    assert out.result_at > 100.0
    assert out.report is not None
    assert out.report_at > out.result_at
    r = out.report
    assert (r.id, r.account, r.carrier, r.route) == ("m1", "AC1", "c1", "direct")
    assert (r.status, r.code, r.price, r.segments, r.attempt) == ("delivered", None, 0.01, 2, 1)
    assert r.ts > 1_000_000
    assert e.ledger.accepted == 1
    assert e.ledger.delivered == 1


def test_report_echoes_country_and_submit_time_for_the_routers_health() -> None:
    e = endpoint(truth("c1"))
    submitted = msgspec.structs.replace(item(2), country="GB", ts=999_000)
    out = e.submit(submitted, now=100.0, wall_ms=1_000_000)
    assert out is not None
    assert out.report is not None
    assert (out.report.country, out.report.submitted_ts) == ("GB", 999_000)


def test_report_echoes_the_submits_sender_id_for_the_receipt() -> None:
    e = endpoint(truth("c1"))
    out = e.submit(msgspec.structs.replace(item(3), sender="ACME"), now=100.0, wall_ms=0)
    assert out is not None
    assert out.report is not None
    assert out.report.sender == "ACME"
    wire = interconnect.REPORT_BATCH.encode(interconnect.DeliveryReportBatch("h", [out.report]))
    assert interconnect.REPORT_BATCH.decode(wire).reports[0].sender == "ACME"
    anonymous = e.submit(item(4), now=100.0, wall_ms=0)
    assert anonymous is not None
    assert anonymous.report is not None
    assert anonymous.report.sender == ""


def test_throttled_past_the_cap() -> None:
    e = endpoint(truth("c1", throughput_mps=5.0))
    outs = [e.submit(item(i), now=0.0, wall_ms=0) for i in range(20)]
    codes = [o.result.code for o in outs if o is not None]
    assert codes.count(None) == 5
    assert codes.count(Code.QUEUE_OVERFLOW) == 15
    assert e.ledger.rejected == {"throttled": 15}
    later = e.submit(item(99), now=1.0, wall_ms=0)  # a second later the bucket has refilled
    assert later is not None
    assert later.result.accepted


def test_repeated_id_is_acknowledged_never_delivered_twice() -> None:
    e = endpoint(truth("c1"))
    first = e.submit(item(1), now=0.0, wall_ms=0)
    again = e.submit(item(1, attempt=2), now=0.0, wall_ms=0)
    assert first is not None
    assert again is not None
    assert again.result.accepted
    assert again.result.duplicate
    assert again.report is None
    assert again.result_at >= first.result_at  # never answered before the original
    assert (e.ledger.accepted, e.ledger.repeats, e.ledger.delivered) == (1, 1, 0 + 1)


def test_a_rejected_id_may_be_submitted_again() -> None:
    e = endpoint(truth("c1", throughput_mps=1.0))
    assert e.submit(item(1), now=0.0, wall_ms=0) is not None
    throttled = e.submit(item(2), now=0.0, wall_ms=0)
    assert throttled is not None
    assert throttled.result.code == Code.QUEUE_OVERFLOW
    retry = e.submit(item(2), now=2.0, wall_ms=0)
    assert retry is not None
    assert retry.result.accepted
    assert not retry.result.duplicate


def test_unknown_and_invalid_destinations() -> None:
    e = endpoint(truth("c1"))
    unknown = e.submit(item(1, to="+33612345678"), now=0.0, wall_ms=0)
    invalid = e.submit(item(2, to="447700900123"), now=0.0, wall_ms=0)
    assert unknown is not None
    assert invalid is not None
    assert unknown.result.code == Code.NO_ROUTE
    assert invalid.result.code == Code.INVALID_DESTINATION
    assert e.ledger.rejected == {"unknown_destination": 1, "invalid_destination": 1}


def test_longest_prefix_sets_the_price() -> None:
    e = endpoint(truth("c1"), {"44": 0.05, "4477": 0.01, "447700": 0.02})
    assert e.price_for("447700900123") == 0.02
    assert e.price_for("447800900123") == 0.05
    assert e.price_for("337700900123") is None


def test_random_failures_undelivered_codes_and_lost_reports() -> None:
    e = endpoint(
        truth(
            "c1",
            submit_failure_rate=0.2,
            delivery_probability=0.5,
            report_loss_rate=0.3,
            throughput_mps=1e9,
        )
    )
    outs = [e.submit(item(i), now=0.0, wall_ms=0) for i in range(4000)]
    failed = sum(1 for o in outs if o is not None and o.result.code == Code.UNKNOWN_ERROR)
    assert 600 < failed < 1000
    led = e.ledger
    assert led.accepted == 4000 - failed
    assert led.delivered + led.undelivered == led.accepted
    assert 0.4 < led.delivered / led.accepted < 0.6
    assert 0.2 < led.reports_lost / led.accepted < 0.4
    codes = {o.report.code for o in outs if o is not None and o.report is not None}
    assert codes == {
        None,
        Code.UNREACHABLE_HANDSET,
        Code.UNKNOWN_HANDSET,
        Code.LANDLINE_OR_UNREACHABLE_CARRIER,
        Code.FILTERED,
    }
    reports = sum(1 for o in outs if o is not None and o.report is not None)
    assert reports == led.accepted - led.reports_lost


def test_destination_truth_overrides_the_carrier_default() -> None:
    t = truth(
        "agg",
        delivery_probability=1.0,
        destinations={"44": DestinationTruth(delivery_probability=0.0, latency_factor=1.0)},
    )
    e = endpoint(t, {"44": 0.01, "33": 0.01})
    uk = [e.submit(item(i), 0.0, 0) for i in range(50)]
    fr = [e.submit(item(f"f{i}", to="+33612345678"), 0.0, 0) for i in range(50)]
    assert all(o is not None and o.report and o.report.status == "undelivered" for o in uk)
    assert all(o is not None and o.report and o.report.status == "delivered" for o in fr)


def test_offline_carrier_does_not_answer() -> None:
    e = endpoint(truth("c1"))
    e.overrides.offline = True
    assert e.submit(item(1), 0.0, 0) is None
    assert e.ledger.ignored_offline == 1
    assert e.ledger.submits == 1


def test_same_seed_same_decisions() -> None:
    a, b = (
        endpoint(truth("c1", delivery_probability=0.5)),
        endpoint(truth("c1", delivery_probability=0.5)),
    )
    ra = [a.submit(item(i), 0.0, 0) for i in range(100)]
    rb = [b.submit(item(i), 0.0, 0) for i in range(100)]
    assert [o.report for o in ra if o] == [o.report for o in rb if o]


def test_mask_number_hides_the_subscriber() -> None:
    assert mask_number(GB) == "+447*******23"
    assert "900" not in mask_number(GB)


def test_ledger_balances_writes_json_and_exposes_metrics(tmp_path: Path) -> None:
    ledger = Ledger(["c1"])
    e = Endpoint(spec("c1"), truth("c1", report_loss_rate=0.5), {"4477": 0.01}, ledger["c1"], 0.0)
    for i in range(100):
        e.submit(item(i % 80), 0.0, 0)
    c = ledger["c1"]
    c.reports_sent = 10
    assert c.submits == c.accepted + c.repeats + sum(c.rejected.values()) + c.ignored_offline
    assert c.accepted == c.reports_sent + c.reports_lost + c.reports_pending
    path = tmp_path / "ledger.json"
    ledger.write_json(path)
    data = json.loads(path.read_text())
    assert data["carriers"]["c1"]["repeats"] == 20
    assert data["totals"]["accepted"] == 80
    registry = CollectorRegistry()
    register_metrics(registry, ledger)
    assert registry.get_sample_value("supernet_carrier_repeats_total", {"carrier": "c1"}) == 20
    assert registry.get_sample_value("supernet_carrier_accepted_total", {"carrier": "c1"}) == 80
    assert registry.get_sample_value("supernet_carrier_online", {"carrier": "c1"}) == 0
