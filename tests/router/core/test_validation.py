"""validate: the stateless refusals, in their order, against a brute-force oracle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.contracts.codes import Code
from router.core.e164 import normalise
from router.core.segments import GSM7, count
from router.core.table import RouteTable
from router.core.types import Carrier
from router.core.validation import NO_ENTRY, validate
from tests.router.core.strategies import COUNTRIES, Network, networks

CARRIERS = {"a": Carrier("a", "a", "direct", 1.0, 0.9, 1e9)}
TABLE = RouteTable(CARRIERS, {"a": {"1": (0.01, "x")}}, COUNTRIES)


def test_a_bad_destination_is_refused_before_an_empty_body() -> None:
    code, _, number, segments, encoding, entry = validate(TABLE, "+12", "", None)
    assert (code, number, segments, encoding) == (Code.INVALID_DESTINATION, "", 0, GSM7)
    assert entry is NO_ENTRY
    assert validate(TABLE, "+15555555555", "", None)[0] == Code.EMPTY_BODY


def test_each_refusal_and_what_it_carries() -> None:
    code, _, number, segments, _, entry = validate(TABLE, "+1 (555) 555-5555", "hi", None)
    assert (code, number, segments, entry.country) == (0, "+15555555555", 1, "AA")
    assert validate(TABLE, "+25555555555", "hi", None)[0] == Code.NO_ROUTE
    assert validate(TABLE, "+95555555555", "hi", None)[0] == Code.INVALID_DESTINATION
    assert validate(TABLE, "+15555555555", "a" * 1601, None)[0] == Code.BODY_TOO_LONG
    assert validate(TABLE, "+" + "1" * 65, "hi", None)[0] == Code.INVALID_DESTINATION
    code, detail, _, segments, _, _ = validate(TABLE, "+15555555555", "a" * 161, 0.015)
    assert (code, segments) == (Code.NO_ROUTE_WITHIN_PRICE, 2)  # 2 x 0.01 > 0.015
    assert "max_price 0.015" in detail
    assert validate(TABLE, "+15555555555", "a" * 160, 0.015)[0] == 0


destinations = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"\+[0-9 ().-]{0,20}", fullmatch=True),
    st.text(alphabet="0123456789", min_size=0, max_size=16).map(lambda d: "+" + d),
)
bodies = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", "hi", "a" * 1600, "a" * 1601, "€" * 81, "ж" * 71]),
)
caps = st.one_of(st.none(), st.integers(0, 3000).map(lambda n: n / 10_000))


def expected(table: RouteTable, to: str, body: str, cap: float | None) -> int:
    """The refusal order written out the slow way: E.164, body, lookup, route, price."""
    digits = normalise(to) if len(to) <= 65 else None
    if digits is None:
        return Code.INVALID_DESTINATION
    sg = count(body)
    if sg.code:
        return sg.code
    real = [p for p in table.entries if digits.startswith(p)]
    if not real:
        return Code.INVALID_DESTINATION
    entry = table.entries[max(real, key=len)]
    if len(digits) not in entry.lengths:
        return Code.INVALID_DESTINATION
    if not entry.quotes:
        return Code.NO_ROUTE
    if cap is not None and min(q.price for q in entry.quotes) * sg.segments > cap:
        return Code.NO_ROUTE_WITHIN_PRICE
    return 0


@settings(max_examples=300, deadline=None)
@given(net=networks(), to=destinations, body=bodies, cap=caps)
def test_validate_matches_the_slow_reading(
    net: Network, to: str, body: str, cap: float | None
) -> None:
    carriers, decks = net
    table = RouteTable(carriers, decks, COUNTRIES, (1, 1, 1))
    assert validate(table, to, body, cap)[0] == expected(table, to, body, cap)
