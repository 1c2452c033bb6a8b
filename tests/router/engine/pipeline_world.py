"""Helpers shared by the pipeline's tests (``test_pipeline_*.py``), on top of ``fakes``.

Facts about the example network read from its files (carrier kinds, throughput caps),
what a twin router would decide, and the checks that most pipeline tests end with.
"""

from __future__ import annotations

from typing import Any

import msgspec

from router.contracts import wire
from router.core.decision import Decision
from router.core.network import example_network
from router.core.policy import CLASS_INDEX
from router.core.throttle import bucket_params
from tests.router.engine.fakes import World, new_router

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
