"""Rate decks as wholesale carriers publish them: one CSV per carrier.

Layout (``DIR/decks/<carrier id>.csv``), the one ``router.core`` imports::

    prefix,destination,price,currency,effective_from
    447700,GB EE,0.0312,USD,2025-03-14

- ``prefix``: E.164 digits without '+', country code included;
- ``destination``: a human label (CSV-quoted when it holds a comma);
- ``price``: USD per segment, a plain decimal string with at most 6 decimals;
- ``currency``: ``USD``; ``effective_from``: ``YYYY-MM-DD``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

HEADER = ("prefix", "destination", "price", "currency", "effective_from")
CURRENCY = "USD"
MIN_PRICE = 0.0001


@dataclass(frozen=True, slots=True)
class DeckLine:
    prefix: str
    destination: str
    price: str  # decimal string, USD per segment


class DeckError(Exception):
    """A rate deck is malformed; the message names the file and line."""


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


def read_prices(path: Path) -> dict[str, float]:
    """prefix -> USD per segment, for the simulator's own use (billing, known prefixes)."""
    prices: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != HEADER:
            raise DeckError(f"{path}: header must be {','.join(HEADER)}")
        for n, row in enumerate(reader, start=2):
            if len(row) != len(HEADER) or not row[0].isdigit():
                raise DeckError(f"{path}:{n}: expected {len(HEADER)} fields with a digit prefix")
            try:
                prices[row[0]] = float(row[2])
            except ValueError:
                raise DeckError(f"{path}:{n}: price {row[2]!r} is not a number") from None
    return prices
