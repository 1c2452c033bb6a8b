"""Hypothesis strategies: small random networks with heavily overlapping prefixes."""

from __future__ import annotations

from hypothesis import strategies as st

from router.core.e164 import CountryData
from router.core.types import Carrier

# A toy numbering plan: few digits, so that random prefixes nest and collide often.
COUNTRIES = CountryData(
    regions={"1": "AA", "2": "BB", "21": "CC", "3": "DD", "32": "EE", "322": "FF"},
    lengths={r: frozenset(range(7, 16)) for r in ("AA", "BB", "CC", "DD", "EE", "FF")},
)
digits = st.text(alphabet="0123", min_size=0, max_size=7)
prefixes = st.builds(lambda a, b: a + b, st.sampled_from("123"), digits)
prices = st.integers(min_value=0, max_value=5000).map(lambda n: n / 10_000)


@st.composite
def carriers(draw: st.DrawFn, n_min: int = 1, n_max: int = 6) -> dict[str, Carrier]:
    n = draw(st.integers(n_min, n_max))
    out = {}
    for i in range(n):
        cid = f"c{i}"
        out[cid] = Carrier(
            cid,
            cid,
            draw(st.sampled_from(["direct", "aggregator"])),
            draw(st.integers(1, 10_000)) / 1000,
            draw(st.integers(1, 100)) / 100,
            draw(st.sampled_from([1.0, 2.0, 5.0, 100.0])),
        )
    return out


Decks = dict[str, dict[str, tuple[float, str]]]
Network = tuple[dict[str, Carrier], Decks]


@st.composite
def networks(draw: st.DrawFn) -> Network:
    cs = draw(carriers())
    decks = {
        cid: {p: (draw(prices), f"dest {p}") for p in draw(st.sets(prefixes, max_size=12))}
        for cid in cs
    }
    return cs, decks


@st.composite
def numbers(draw: st.DrawFn, decks: Decks) -> str:
    """Digits of a destination: usually under some deck prefix, sometimes anywhere."""
    known = sorted({p for d in decks.values() for p in d})
    under_a_prefix: bool = draw(st.booleans())
    head: str = draw(st.sampled_from(known)) if known and under_a_prefix else ""
    tail = draw(st.text(alphabet="0123456789", min_size=0, max_size=15))
    d = (head + tail)[:15]
    if not d or d[0] not in "123":
        d = "1" + d[1:]
    return (d + "5" * 7)[: max(7, len(d))]


budgets = st.tuples(st.integers(1, 60), st.integers(1, 30), st.integers(0, 4))
