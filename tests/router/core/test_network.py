"""Loading network directories, and the table swap."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.decision import Router
from router.core.e164 import load_country_data
from router.core.errors import DeckError, NetworkError
from router.core.health import Health, HealthConfig
from router.core.network import example_network, load_network
from router.core.policy import EXPECTED_COST
from router.core.table import RouteTable
from router.core.throttle import bucket_params
from tests.router.core.strategies import COUNTRIES, Network, networks, numbers


def test_example_network_loads_every_carrier() -> None:
    table = load_network(example_network())
    assert len(table.carriers) == 14
    assert {"direct", "aggregator"} == {c.kind for c in table.carriers.values()}


def test_as_of_selects_the_rows_in_force() -> None:
    now = load_network(example_network(), dt.date(2026, 1, 1))
    later = load_network(example_network(), dt.date(2031, 6, 1))
    before = {q.carrier: q.price for q in now.lookup("447700900123").quotes}  # type: ignore[union-attr]
    after = {q.carrier: q.price for q in later.lookup("447700900123").quotes}  # type: ignore[union-attr]
    assert before["gb-ee"] == 0.03
    assert after["gb-ee"] == 0.029


def test_missing_deck_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="no network description"):
        load_network(tmp_path)
    shutil.copytree(example_network(), tmp_path / "net")
    (tmp_path / "net" / "decks" / "gb-o2.csv").unlink()
    with pytest.raises(DeckError, match=r"gb-o2\.csv:0: rate deck file not found"):
        load_network(tmp_path / "net")


def test_swap_replaces_the_table_in_one_step(tmp_path: Path) -> None:
    router = Router(load_network(example_network()))
    assert router.decide("+447700900123", "hi", 0, None, 0.0).carrier == "gb-ee"
    shutil.copytree(example_network(), tmp_path / "net")
    (tmp_path / "net" / "decks" / "gb-ee.csv").write_text(
        "prefix,destination,price,currency,effective_from\n447700,UK,0.9,USD,2020-01-01\n"
    )
    router.swap(load_network(tmp_path / "net"))
    assert router.decide("+447700900123", "hi", 0, None, 1.0).carrier == "gb-o2"


def test_country_data_covers_shared_calling_codes() -> None:
    data = load_country_data()
    assert data.country_of("12045551234") == "CA"
    assert data.country_of("12125551234") == "US"
    assert data.country_of("77012345678") == "KZ"
    assert data.country_of("79123456789") == "RU"
    assert data.is_valid("447700900123")
    assert not data.is_valid("4477009001")


Step = tuple[str, int, int]


@settings(max_examples=200, deadline=None)
@given(
    net=networks(),
    data=st.data(),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["decide", "decide", "swap", "report", "wait"]),
            st.integers(0, 99),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_decisions_interleaved_with_swaps_rank_on_the_current_table_and_health(
    net: Network, data: st.DataObject, steps: list[Step]
) -> None:
    """Whatever the order of decisions, swaps, delivery reports and time, every decision's
    routes are what the policy ranks from the current table's quotes and the health
    published now: never a ranking cached from another table or from older health."""
    carriers, decks = net
    other = {cid: {p: (round(0.5 - price, 4), d) for p, (price, d) in deck.items()}
             for cid, deck in decks.items()}  # fmt: skip
    tables = [RouteTable(carriers, decks, COUNTRIES, (1, 1, 1)),
              RouteTable(carriers, other, COUNTRIES, (1, 1, 1))]  # fmt: skip
    health = Health(HealthConfig(alpha=0.5, refresh_s=1.0, collapse_min_reports=10**9))
    router = Router(tables[0], health)
    destinations = [data.draw(numbers(decks)) for _ in range(3)]
    now = 0.0
    for op, a, b in steps:
        digits = destinations[a % len(destinations)]
        entry = router.table.lookup(digits)
        if op == "swap":
            router.swap(tables[a % 2])
        elif op == "report" and entry is not None and entry.quotes:
            # a failed delivery on one of this destination's carriers: its rate drops
            carrier = carriers[entry.quotes[b % len(entry.quotes)].carrier]
            health.delivery(carrier, entry.country, False, None, now)
        elif op == "wait":
            now += 0.5 * (b + 1)
        elif op == "decide":
            d = router.decide("+" + digits, "hi", b, None, now)
            if d.code == 0:
                assert entry is not None
                want = EXPECTED_COST.rank(entry.quotes, carriers, b, entry.country,
                                          health.estimate, bucket_params)  # fmt: skip
                assert d.routes == want
            now += 1000.0  # every bucket full again
