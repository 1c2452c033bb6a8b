"""The stateless half of a routing decision: is this message routable at all, and how.

``validate`` is the one place that refuses a message for what it *is* (a destination
that is not E.164 or not a valid length, a body that is empty or too long, a destination
no carrier reaches, or none within ``max_price``). It depends on the route table only,
never on health or throttles; ``Router.decide`` and the economics run both call it, so
they refuse the same messages with the same codes, in the same order of checks:

1. the destination: ``+`` and 7..15 digits, else ``normalise`` (formatting characters
   allowed, up to ``MAX_TYPED`` characters): 21211;
2. the body: empty (21602) or over 1,600 characters (21617);
3. the lookup: no country code, or a length not valid there: 21211;
4. no carrier has the destination on its deck: 21612;
5. the cheapest carrier costs more than ``max_price`` for the whole message: 21618.

It is on the hot path: the common case (``+digits``, an ASCII GSM-7 body) is tested with
C-level string operations inline, and the trie lookup is inlined from
``RouteTable.lookup``.
"""

from __future__ import annotations

from typing import Final

from router.contracts.codes import Code
from router.contracts.wire import quote
from router.core.e164 import MAX_DIGITS, MIN_DIGITS, UNKNOWN_COUNTRY, normalise
from router.core.segments import ASCII_BASIC, GSM7, MAX_CHARS, PART_GSM7, count
from router.core.table import Entry, RouteTable

MAX_TYPED: Final = 64
"""A destination longer than this, formatting included, is refused without parsing."""

NO_ENTRY: Final = Entry("", UNKNOWN_COUNTRY, frozenset(), ())
"""The entry of a message refused before (or at) the lookup."""


Checked = tuple[int, str, str, int, str, Entry]
"""What ``validate`` found, as a plain tuple (the cheapest thing to build and unpack on
the hot path): ``(code, detail, number, segments, encoding, entry)``:

- ``code``: 0 when routable (given a carrier free to take it), else the refusal's ``Code``;
- ``detail``: what was wrong, for the refusal's reason ("" when routable);
- ``number``: the destination as E.164 ('+' and digits); "" when refused;
- ``segments``: 0 when refused before the body was counted, or for a bad body;
- ``encoding``: the body's encoding (GSM-7 when refused before the body was counted);
- ``entry``: the matched table entry; ``NO_ENTRY`` when there is none.
"""


def validate(table: RouteTable, to: str, body: str, max_price: float | None) -> Checked:
    """Check one message against ``table`` (see the module docstring for the order)."""
    d = to[1:]
    n = len(d)
    number = to
    if not (
        d.isdigit() and d.isascii() and to[:1] == "+" and MIN_DIGITS <= n <= MAX_DIGITS
        and d[0] != "0"  # no country code starts with 0: not E.164 (as ``normalise`` says)
    ):  # fmt: skip
        norm = normalise(to) if n <= MAX_TYPED else None
        if norm is None:
            why = f"{quote(to, 40)!r} is not +digits in E.164"
            return Code.INVALID_DESTINATION, why, "", 0, GSM7, NO_ENTRY
        d = norm
        n = len(d)
        number = "+" + d
    nb = len(body)
    if body.isascii() and 0 < nb <= MAX_CHARS and not body.encode().translate(None, ASCII_BASIC):
        segs = 1 if nb <= 160 else -(-nb // PART_GSM7)
        enc = GSM7
    else:
        sg = count(body)
        if sg.code:
            return sg.code, "", "", 0, sg.encoding, NO_ENTRY
        segs = sg.segments
        enc = sg.encoding
    get = table.probe
    e = get(d[: table.root])
    if e is not None:
        nxt = e.next
        while nxt:
            if nxt > n:  # a number shorter than the next level: rare, slow path
                e = table.short(d)
                break
            x = get(d[:nxt])
            if x is None:
                break
            e = x
            nxt = x.next
    elif n < table.root:
        e = table.short(d)
    if e is None:
        return Code.INVALID_DESTINATION, "unknown country code", "", segs, enc, NO_ENTRY
    if n not in e.lengths:
        why = f"{n} digits is not a valid length"
        return Code.INVALID_DESTINATION, why, "", segs, enc, e
    if max_price is not None and e.cheapest * segs > max_price:
        return _price_refusal(e, segs, enc, max_price)
    if not e.quotes:
        return Code.NO_ROUTE, f"+{e.prefix} ({e.country})", "", segs, enc, e
    return 0, "", number, segs, enc, e


def _price_refusal(e: Entry, segs: int, enc: str, max_price: float) -> Checked:
    if not e.quotes:  # ``cheapest`` is infinite: no route at all
        return Code.NO_ROUTE, f"+{e.prefix} ({e.country})", "", segs, enc, e
    why = f"cheapest is {e.cheapest * segs:.5f} USD for {segs} segment(s), max_price {max_price}"
    return Code.NO_ROUTE_WITHIN_PRICE, why, "", segs, enc, e
