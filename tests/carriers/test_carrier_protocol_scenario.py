"""Wire schemas, topics and fault scenarios (pure parts)."""

from __future__ import annotations

import msgspec
import pytest

from carriers import scenario
from carriers.endpoint import Endpoint
from carriers.ledger import CarrierLedger
from router.contracts import interconnect
from tests.carriers.carrier_helpers import spec, truth


def test_batches_round_trip_as_msgpack() -> None:
    batch = interconnect.SubmitBatch(
        carrier="gb-ee",
        reply_to="supernet/router/r1/results",
        items=[interconnect.SubmitItem(id="m1", to="+447700900123", account="AC1", segments=2)],
    )
    assert interconnect.SUBMIT_BATCH.decode(interconnect.SUBMIT_BATCH.encode(batch)) == batch
    report = interconnect.DeliveryReport(
        id="m1", carrier="gb-ee", route="direct", status="undelivered", ts=1, code=30003
    )
    reports = interconnect.DeliveryReportBatch("gb-ee", [report])
    assert interconnect.REPORT_BATCH.decode(interconnect.REPORT_BATCH.encode(reports)) == reports
    with pytest.raises(msgspec.DecodeError):
        interconnect.SUBMIT_BATCH.decode(b"\x93garbage")


def test_topics() -> None:
    assert interconnect.host_submit_topic("h1") == "supernet/carriers/host/h1/submit"
    assert interconnect.carrier_status_topic("h1", "gb-ee") == (
        "supernet/carriers/host/h1/carrier/gb-ee/status"
    )
    assert interconnect.carrier_of("supernet/carriers/host/h1/carrier/gb-ee/status") == "gb-ee"
    assert interconnect.dlr_shared_subscription("routers") == (
        "$share/routers/supernet/carriers/host/+/dlr"
    )
    assert interconnect.host_of("supernet/carriers/host/h1/dlr") == "h1"
    assert interconnect.host_of("supernet/carriers/host/h1/carrier/gb-ee/status") == "h1"
    reply_to = interconnect.reply_topic("w1")
    assert interconnect.result_topic(reply_to, "h1") == "supernet/router/w1/results/h1"
    assert interconnect.host_of("supernet/router/w1/results/h1") == "h1"
    assert interconnect.decode_status(b"offline") == "offline"
    with pytest.raises(ValueError, match="carrier status topic"):
        interconnect.carrier_of("other/gb-ee/dlr")


@pytest.mark.parametrize(
    "reply_to",
    ["supernet/carriers/host/h2/dlr", "supernet/router/+/results", "supernet/router//results",
     "supernet/router/w1/results/x", "elsewhere", ""],
)  # fmt: skip
def test_a_carrier_answers_only_on_a_routers_reply_topic(reply_to: str) -> None:
    with pytest.raises(ValueError, match="not a router's results topic"):
        interconnect.result_topic(reply_to, "h1")


def test_example_scenario_parses_with_every_kind() -> None:
    s = scenario.load(scenario.example_path())
    kinds = {type(e) for e in s.events}
    assert kinds == {
        scenario.Offline,
        scenario.LatencySpike,
        scenario.DeliveryDrop,
        scenario.LostReports,
        scenario.Throttle,
        scenario.PriceChange,
    }


def test_bad_scenarios_say_what_is_wrong() -> None:
    with pytest.raises(scenario.ScenarioError, match="kind"):
        scenario.parse('[[events]]\nkind = "meteor"\nat = 1\ncarriers = "*"\n')
    with pytest.raises(scenario.ScenarioError, match="at must be"):
        scenario.parse('[[events]]\nkind = "offline"\nat = -1\ncarriers = "*"\n')
    with pytest.raises(scenario.ScenarioError, match="TOML"):
        scenario.parse("[[events]\n")


def test_timeline_orders_steps_and_reverts() -> None:
    s = scenario.parse(
        """
        [[events]]
        kind = "offline"
        at = 5
        carriers = "a"
        duration = 10
        [[events]]
        kind = "throttle"
        at = 1
        carriers = "b"
        mps = 2
        """
    )
    steps = [(st.at, type(st.event).__name__, st.revert) for st in scenario.timeline(s)]
    assert steps == [(1, "Throttle", False), (5, "Offline", False), (15, "Offline", True)]


def test_steps_change_matching_endpoints_and_undo() -> None:
    eps = [
        Endpoint(spec(i), truth(i), {"4477": 0.01}, CarrierLedger(i), 0.0)
        for i in ("gb-a", "gb-b", "fr-a")
    ]
    spike = scenario.Step(0, scenario.LatencySpike(at=0, carriers="gb-*", factor=4.0))
    assert [e.id for e in scenario.apply(spike, eps)] == ["gb-a", "gb-b"]
    assert [e.overrides.latency_factor for e in eps] == [4.0, 4.0, 1.0]
    price = scenario.Step(0, scenario.PriceChange(at=0, carriers="fr-a,gb-b", factor=2.0))
    scenario.apply(price, eps)
    out = eps[2].submit(interconnect.SubmitItem(id="x", to="+447700900123"), 0.0, 0)
    assert out is not None
    assert out.result.price == 0.02
    throttle = scenario.Step(0, scenario.Throttle(at=0, carriers="gb-a", mps=1.0))
    scenario.apply(throttle, eps)
    assert eps[0].bucket.rate == 1.0
    scenario.apply(scenario.Step(1, throttle.event, revert=True), eps)
    assert eps[0].bucket.rate == eps[0].truth.throughput_mps
    scenario.apply(scenario.Step(1, spike.event, revert=True), eps)
    assert [e.overrides.latency_factor for e in eps] == [1.0, 1.0, 1.0]
