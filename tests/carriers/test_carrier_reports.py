"""The store of unacknowledged reports with a fake clock, the reconnect backoff, and the
ledger's report metrics: no broker."""

from __future__ import annotations

import aiomqtt
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from carriers.connections import connection_lost
from carriers.ledger import CarrierLedger, Ledger, register_metrics
from carriers.reports import ReportStore
from router.contracts import interconnect
from router.support.backoff import Backoff

CARRIERS = ("c1", "c2")


def report(n: int, carrier: str = "c1") -> interconnect.DeliveryReport:
    return interconnect.DeliveryReport(
        id=f"m{n}", carrier=carrier, route="direct", status="delivered", ts=1
    )


def ack(n: int, carrier: str = "c1") -> interconnect.ReportAck:
    return interconnect.ReportAck(id=f"m{n}", carrier=carrier)


def store(resend_s: float = 10.0, limit: int = 100) -> ReportStore:
    return ReportStore(Ledger(CARRIERS), resend_s=resend_s, limit=limit)


def balanced(c: CarrierLedger) -> bool:
    return c.reports_unacked == (
        c.reports_sent + c.reports_restored_unacked - c.reports_acked - c.reports_dropped
    )


def test_unacknowledged_report_is_due_again_after_the_interval_until_acked() -> None:
    s = store(resend_s=10.0)
    r = report(1)
    assert s.take(r)
    assert s.published([r], now=0.0) == ([], [])
    assert s.due(9.9) == []
    again = s.due(10.0)
    assert [(x.id, x.resent) for x in again] == [("m1", 1)]
    assert s.take(again[0])
    s.published(again, now=10.5)
    assert s.due(20.4) == []
    assert [x.resent for x in s.due(20.5)] == [2]
    led = s.ledger["c1"]
    assert (led.reports_sent, led.reports_resent, led.reports_unacked) == (1, 1, 1)
    assert s.ack([ack(1)]) == ([("c1", "m1")], 0)
    assert (led.reports_acked, led.reports_unacked, len(s)) == (1, 0, 0)
    assert s.due(1000.0) == []
    assert balanced(led)


def test_acked_report_is_not_sent_again_and_a_second_ack_is_unknown() -> None:
    s = store()
    r = report(1)
    s.take(r)
    s.published([r], now=0.0)
    assert s.ack([ack(1)]) == ([("c1", "m1")], 0)
    assert s.ack([ack(1), ack(9), ack(1, "elsewhere")]) == ([], 3)
    assert s.due(100.0) == []
    assert s.ledger["c1"].reports_acked == 1


def test_ack_while_queued_for_a_resend_cancels_it() -> None:
    s = store(resend_s=1.0)
    r = report(1)
    s.take(r)
    s.published([r], now=0.0)
    (again,) = s.due(1.0)
    s.ack([ack(1)])
    assert not s.take(again)  # the pump drops it: acknowledged while it waited
    s.published([again], now=1.1)  # or it was already on its way: not held again
    assert len(s) == 0
    assert s.due(100.0) == []
    led = s.ledger["c1"]
    assert (led.reports_resent, led.reports_acked, led.reports_unacked) == (1, 1, 0)
    assert balanced(led)


def test_ack_before_the_puback_counts_once_the_broker_confirms() -> None:
    s = store()
    r = report(1)
    s.take(r)
    assert s.ack([ack(1)]) == ([], 0)  # the router was faster than our PUBACK
    assert s.published([r], now=0.0) == ([("c1", "m1")], [])
    led = s.ledger["c1"]
    assert (led.reports_sent, led.reports_acked, led.reports_unacked, len(s)) == (1, 1, 0, 0)
    assert s.due(100.0) == []


def test_a_second_copy_of_a_first_publication_is_not_taken() -> None:
    s = store()
    assert s.take(report(1))
    assert not s.take(report(1))


def test_store_is_bounded_and_drops_the_oldest() -> None:
    s = store(limit=2, resend_s=1.0)
    reports = [report(i) for i in range(5)]
    for r in reports[:2]:
        s.take(r)
    s.published(reports[:2], now=0.0)
    for r in reports[2:]:
        s.take(r)
    assert sorted(s.take_dropped()) == [("c1", "m0"), ("c1", "m1")]
    # m2 went over the bound while on its way: dropped when the broker confirms it
    assert s.published(reports[2:], now=0.0) == ([], [("c1", "m2")])
    assert len(s) == 2
    assert sorted(r.id for r in s.due(1.0)) == ["m3", "m4"]
    led = s.ledger["c1"]
    assert (led.reports_sent, led.reports_dropped, led.reports_unacked) == (5, 3, 2)
    assert balanced(led)


def test_restored_report_is_held_and_its_publication_is_a_resend() -> None:
    s = store(resend_s=1.0)
    r = interconnect.DeliveryReport(
        id="m1", carrier="c2", route="direct", status="undelivered", ts=1, resent=3
    )
    s.restore(r)
    assert ("c2", "m1") in s
    assert s.take(r)
    s.published([r], now=0.0)
    led = s.ledger["c2"]
    assert (led.reports_sent, led.reports_resent, led.reports_restored_unacked) == (0, 1, 1)
    assert [x.resent for x in s.due(1.0)] == [4]
    assert balanced(led)


class StoreMachine(RuleBasedStateMachine):
    """Any mix of publications, acks, PUBACKs and time: the ledger balances, the bound
    holds, and a report acknowledged while held is never published again."""

    def __init__(self) -> None:
        super().__init__()
        self.store = ReportStore(Ledger(CARRIERS), resend_s=1.0, limit=6)
        self.now = 0.0
        self.next_id = 0
        self.queued: list[interconnect.DeliveryReport] = []  # taken, PUBACK not back yet
        self.acked: set[tuple[str, str]] = set()

    @rule(carrier=st.sampled_from(CARRIERS))
    def new_report(self, carrier: str) -> None:
        r = report(self.next_id, carrier)
        self.next_id += 1
        assert self.store.take(r)
        self.queued.append(r)

    @precondition(lambda self: bool(self.queued))
    @rule(n=st.integers(1, 5))
    def puback(self, n: int) -> None:
        batch, self.queued = self.queued[:n], self.queued[n:]
        acked, _ = self.store.published(batch, self.now)
        self.acked.update(acked)

    @rule(dt=st.floats(0.0, 2.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for r in self.store.due(self.now):
            assert (r.carrier, r.id) not in self.acked
            if self.store.take(r):
                self.queued.append(r)

    @rule(n=st.integers(0, 40), carrier=st.sampled_from(CARRIERS))
    def ack(self, n: int, carrier: str) -> None:
        key = (carrier, f"m{n}")
        released, _ = self.store.ack([ack(n, carrier)])
        if released:
            self.acked.add(key)

    @invariant()
    def ledger_balances(self) -> None:
        assert len(self.store) <= self.store.limit
        for c in self.store.ledger.carriers.values():
            assert balanced(c)
            assert c.reports_unacked >= 0


StoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_report_store_state_machine = StoreMachine.TestCase


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    high = Backoff(initial=0.2, cap=5.0, rng=lambda: 1.0)
    assert [round(high.delay(), 3) for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    low = Backoff(initial=0.2, cap=5.0, rng=lambda: 0.0)
    assert [round(low.delay(), 3) for _ in range(3)] == [0.1, 0.2, 0.4]
    high.reset()
    assert high.delay() == pytest.approx(0.2)


def test_connection_lost_recognises_mqtt_errors_in_task_groups_only() -> None:
    error = aiomqtt.MqttError("gone")
    assert connection_lost(error)
    assert connection_lost(ExceptionGroup("g", [error, ExceptionGroup("h", [error])]))
    assert not connection_lost(ExceptionGroup("g", [error, ValueError("bug")]))
    assert not connection_lost(ValueError("bug"))


def test_report_metrics_are_exposed_per_carrier() -> None:
    ledger = Ledger(["c1"])
    c = ledger["c1"]
    c.reports_sent, c.reports_acked, c.reports_resent, c.reports_dropped = 5, 2, 7, 1
    c.reports_unacked = 2
    registry = CollectorRegistry()
    register_metrics(registry, ledger)
    label = {"carrier": "c1"}
    sample = registry.get_sample_value
    assert sample("supernet_carrier_reports_acked_total", label) == 2
    assert sample("supernet_carrier_reports_resent_total", label) == 7
    assert sample("supernet_carrier_reports_dropped_total", label) == 1
    assert sample("supernet_carrier_reports_unacked", label) == 2
    summary = ledger.summary()["carriers"]
    assert isinstance(summary, dict)
    assert summary["c1"]["reports_unacked"] == 2
