"""Rate deck import: one carrier's CSV price list. The one deck reader: the router, the
simulator (``carriers.deck.read_prices``, ``carriers.network``) and the load generator
(``router.tools.load.numbers``) all read decks here.

Layout (header line exactly as shown; stdlib ``csv`` dialect, fields may be quoted)::

    prefix,destination,price,currency,effective_from
    447700,United Kingdom - Mobile - EE,0.0079,USD,2025-01-01

- ``prefix``: E.164 digits without '+', country code included, 1..15 digits, no leading 0;
- ``destination``: free text, not empty;
- ``price``: decimal USD per segment, >= 0 (``0.0079``; no exponent, no sign);
- ``currency``: ``USD`` (only USD decks are supported);
- ``effective_from``: ``YYYY-MM-DD``. A prefix may appear with several dates: the row in
  force is the one with the latest date on or before the as-of date. The same prefix
  twice with the same date is an error.

Every bad row raises ``DeckError`` naming the file, the line and what is wrong; nothing
is skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from router.core.errors import DeckError

HEADER = ("prefix", "destination", "price", "currency", "effective_from")
CURRENCY = "USD"
_PRICE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class RateRow(NamedTuple):
    """One deck line, validated."""

    prefix: str
    destination: str
    price: float  # USD per segment
    effective_from: dt.date
    line: int


class Rate(NamedTuple):
    """The row in force for a prefix on the as-of date."""

    prefix: str
    destination: str
    price: float


def parse_rows(lines: Iterable[str], path: str) -> Iterator[RateRow]:
    """Validate deck lines (the header included) into rows; raises DeckError."""
    reader = csv.reader(lines, strict=True)
    dates: dict[str, dt.date] = {}
    seen: dict[tuple[str, str], int] = {}
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            raise DeckError(path, 1, f"empty file; the first line must be {','.join(HEADER)}")
        if tuple(header) != HEADER:
            raise DeckError(
                path, 1, f"header is {','.join(header)!r}; it must be exactly {','.join(HEADER)}"
            )
        for row in reader:
            line = reader.line_num
            if len(row) != len(HEADER):
                what = "empty line" if not row else f"expected 5 fields, found {len(row)}"
                raise DeckError(path, line, f"{what} (columns: {','.join(HEADER)})")
            prefix, destination, price, currency, effective = row
            if not (prefix.isascii() and prefix.isdigit()) or len(prefix) > 15:
                raise DeckError(path, line, f"prefix {prefix!r} is not 1 to 15 digits")
            if prefix[0] == "0":
                raise DeckError(
                    path, line, f"prefix {prefix!r} starts with 0; use E.164 with country code"
                )
            if not destination.strip():
                raise DeckError(path, line, "destination is empty")
            if not _PRICE.fullmatch(price):
                raise DeckError(
                    path, line, f"price {price!r} is not a decimal number >= 0 (like 0.0079)"
                )
            if currency != CURRENCY:
                raise DeckError(
                    path, line, f"currency {currency!r} is not supported; only USD decks are"
                )
            day = dates.get(effective)
            if day is None:
                if not _DATE.fullmatch(effective):
                    raise DeckError(
                        path, line, f"effective_from {effective!r} is not a YYYY-MM-DD date"
                    )
                try:
                    day = dates[effective] = dt.date.fromisoformat(effective)
                except ValueError:
                    raise DeckError(
                        path, line, f"effective_from {effective!r} is not a real date"
                    ) from None
            first = seen.setdefault((prefix, effective), line)
            if first != line:
                raise DeckError(
                    path, line, f"prefix {prefix} effective {effective} repeats line {first}"
                )
            yield RateRow(prefix, destination, float(price), day, line)
    except csv.Error as e:
        raise DeckError(path, reader.line_num or line, f"not valid CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise DeckError(path, line + 1, f"not UTF-8 text: {e.reason}") from None


def in_force(rows: Iterable[RateRow], as_of: dt.date) -> dict[str, Rate]:
    """Prefix -> the row in force on ``as_of`` (latest effective_from <= as_of)."""
    best: dict[str, RateRow] = {}
    for row in rows:
        if row.effective_from > as_of:
            continue
        old = best.get(row.prefix)
        if old is None or row.effective_from > old.effective_from:
            best[row.prefix] = row
    return {p: Rate(r.prefix, r.destination, r.price) for p, r in best.items()}


def read_rows(path: Path) -> list[RateRow]:
    """Every row of one deck file, every date included, validated; raises DeckError."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return list(parse_rows(f, str(path)))
    except FileNotFoundError:
        raise DeckError(str(path), 0, "rate deck file not found") from None


def load_deck(path: Path, as_of: dt.date | None = None) -> dict[str, Rate]:
    """Read one deck file and return the rates in force on ``as_of`` (default: today)."""
    return in_force(read_rows(path), as_of or dt.date.today())
