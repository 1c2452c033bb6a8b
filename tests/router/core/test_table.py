"""The compiled table against the brute-force oracle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.table import RouteTable
from router.core.types import Carrier
from tests.router.core import oracle
from tests.router.core.strategies import COUNTRIES, Network, budgets, networks, numbers


@settings(max_examples=300, deadline=None)
@given(data=st.data(), net=networks(), budget=budgets)
def test_one_lookup_yields_every_candidate_at_its_longest_prefix(
    data: st.DataObject, net: Network, budget: tuple[int, int, int]
) -> None:
    carriers, decks = net
    table = RouteTable(carriers, decks, COUNTRIES, budget)
    for _ in range(20):
        d = data.draw(numbers(decks))
        e = table.lookup(d)
        expected = oracle.candidates(d, decks)
        got = {} if e is None else {q.carrier: (q.price, q.prefix) for q in e.quotes}
        assert got == expected, (d, e)
        want_country = oracle.country(d, COUNTRIES)
        assert (e.country if e is not None else None) in (want_country, None if not got else "")
        if want_country is not None:
            assert e is not None
            assert e.country == want_country


@settings(max_examples=100, deadline=None)
@given(data=st.data(), net=networks())
def test_entry_prefix_is_the_longest_matching_real_prefix(
    data: st.DataObject, net: Network
) -> None:
    carriers, decks = net
    table = RouteTable(carriers, decks, COUNTRIES, (1, 1, 0))
    real = set(COUNTRIES.regions) | {p for deck in decks.values() for p in deck}
    for _ in range(20):
        d = data.draw(numbers(decks))
        longest = max((p for p in real if d.startswith(p)), key=len, default=None)
        e = table.lookup(d)
        assert (e.prefix if e is not None else None) == longest


def test_short_number_never_loops_on_a_deep_level() -> None:
    decks = {"a": {"1": (0.1, "x"), "12345678901": (0.2, "y")}}
    cs = {"a": Carrier("a", "a", "direct", 1.0, 0.9, 10.0)}
    table = RouteTable(cs, decks, COUNTRIES, (1, 1, 0))
    e = table.lookup("1234567")
    assert e is not None
    assert e.prefix == "1"
    e = table.lookup("123456789012")
    assert e is not None
    assert e.prefix == "12345678901"
