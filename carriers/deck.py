"""Rate decks as wholesale carriers publish them: one CSV per carrier (the writer).

Layout (``DIR/decks/<carrier id>.csv``), the one ``router.core.deck`` reads::

    prefix,destination,price,currency,effective_from
    447700,GB EE,0.0312,USD,2025-03-14

- ``prefix``: E.164 digits without '+', country code included;
- ``destination``: a human label (CSV-quoted when it holds a comma);
- ``price``: USD per segment, a plain decimal string with at most 6 decimals;
- ``currency``: ``USD``; ``effective_from``: ``YYYY-MM-DD``.

Reading is ``router.core.deck``'s job, the one reader: ``read_prices`` here asks it for
the rows in force, so the simulator bills exactly the prices the router quotes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from router.core.deck import CURRENCY, HEADER, RateRow, load_deck
from router.core.errors import DeckError

__all__ = [
    "CURRENCY",
    "HEADER",
    "MIN_PRICE",
    "DeckError",
    "DeckLine",
    "format_price",
    "read_prices",
    "render",
    "render_rows",
    "write",
]

MIN_PRICE = 0.0001


@dataclass(frozen=True, slots=True)
class DeckLine:
    prefix: str
    destination: str
    price: str  # decimal string, USD per segment


def format_price(value: float) -> str:
    """A price as a plain decimal string: 4 significant digits, at most 6 decimals, no
    exponent, never zero (``0.0079``, ``0.1101``)."""
    rounded = float(f"{max(value, MIN_PRICE):.4g}")
    return f"{rounded:.6f}".rstrip("0").rstrip(".")


def render(lines: list[DeckLine], effective_from: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for line in lines:
        writer.writerow((line.prefix, line.destination, line.price, CURRENCY, effective_from))
    return buf.getvalue().encode("utf-8")


def write(path: Path, lines: list[DeckLine], effective_from: str) -> None:
    path.write_bytes(render(lines, effective_from))


def render_rows(rows: Iterable[RateRow]) -> bytes:
    """Rows as read by ``router.core.deck.parse_rows``, each with its own date, back to
    CSV (prices as plain decimals: the shortest string that reads back the same float)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for r in rows:
        price = format(Decimal(repr(r.price)), "f")
        writer.writerow((r.prefix, r.destination, price, CURRENCY, r.effective_from.isoformat()))
    return buf.getvalue().encode("utf-8")


def read_prices(path: Path, as_of: dt.date | None = None) -> dict[str, float]:
    """prefix -> USD per segment in force on ``as_of`` (default: today), for the
    simulator's own use (billing, known prefixes): ``router.core.deck.load_deck``'s rows,
    so a future-dated row is billed from its date on, as the router quotes it. Raises
    ``DeckError`` (``router.core.errors``) naming the file and line of a bad row."""
    return {prefix: rate.price for prefix, rate in load_deck(path, as_of).items()}
