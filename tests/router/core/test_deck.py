"""Deck import: rates in force by date, and one clear error per kind of bad row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from router.core.deck import in_force, load_deck, parse_rows
from router.core.errors import DeckError

HEADER = "prefix,destination,price,currency,effective_from\n"


def write(tmp_path: Path, text: str, name: str = "c.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_quoted_destination_and_latest_effective_row(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + '447700,"United Kingdom, Mobile - EE",0.0300,USD,2025-01-01\n'
        + "447700,United Kingdom - Mobile - EE,0.0290,USD,2025-06-01\n"
        + "447700,United Kingdom - Mobile - EE,0.0100,USD,2030-01-01\n"
        + "44,United Kingdom,.05,USD,2025-01-01\n",
    )
    rates = load_deck(path, dt.date(2025, 7, 1))
    assert rates["447700"].price == 0.029
    assert rates["44"].price == 0.05
    early = load_deck(path, dt.date(2025, 3, 1))
    assert early["447700"].price == 0.03
    assert early["447700"].destination == "United Kingdom, Mobile - EE"
    assert load_deck(path, dt.date(2024, 12, 31)) == {}


BAD_ROWS = [
    ("447700,UK,0.03,USD\n", "expected 5 fields, found 4"),
    ("447700,UK,0.03,USD,2025-01-01,x\n", "expected 5 fields, found 6"),
    ("\n", "empty line"),
    ("44a7,UK,0.03,USD,2025-01-01\n", "prefix '44a7' is not 1 to 15 digits"),
    (",UK,0.03,USD,2025-01-01\n", "prefix '' is not 1 to 15 digits"),
    ("1234567890123456,UK,0.03,USD,2025-01-01\n", "prefix '1234567890123456' is not 1 to 15"),
    ("+447,UK,0.03,USD,2025-01-01\n", "prefix '+447' is not 1 to 15 digits"),
    ("٤٤,UK,0.03,USD,2025-01-01\n", "is not 1 to 15 digits"),
    ("0447,UK,0.03,USD,2025-01-01\n", "prefix '0447' starts with 0"),
    ("447,  ,0.03,USD,2025-01-01\n", "destination is empty"),
    ("447,UK,-0.03,USD,2025-01-01\n", "price '-0.03' is not a decimal number >= 0"),
    ("447,UK,abc,USD,2025-01-01\n", "price 'abc' is not a decimal number"),
    ("447,UK,1e-3,USD,2025-01-01\n", "price '1e-3' is not a decimal number"),
    ("447,UK,nan,USD,2025-01-01\n", "price 'nan' is not a decimal number"),
    ("447,UK,,USD,2025-01-01\n", "price '' is not a decimal number"),
    ("447,UK,0.03,EUR,2025-01-01\n", "currency 'EUR' is not supported; only USD decks are"),
    ("447,UK,0.03,usd,2025-01-01\n", "currency 'usd' is not supported"),
    ("447,UK,0.03,USD,01/02/2025\n", "effective_from '01/02/2025' is not a YYYY-MM-DD date"),
    ("447,UK,0.03,USD,20250101\n", "effective_from '20250101' is not a YYYY-MM-DD date"),
    ("447,UK,0.03,USD,2025-02-30\n", "effective_from '2025-02-30' is not a real date"),
    ('447,"UK,0.03,USD,2025-01-01\n', "not valid CSV"),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_bad_row_names_file_line_and_problem(tmp_path: Path, row: str, problem: str) -> None:
    good = "44,UK,0.02,USD,2025-01-01\n"
    path = write(tmp_path, HEADER + good + row)
    with pytest.raises(DeckError) as info:
        load_deck(path, dt.date(2025, 7, 1))
    assert info.value.path == str(path)
    assert info.value.line == 3
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{path}:3: ")


def test_duplicate_prefix_and_date_names_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "447,UK,0.03,USD,2025-01-01\n"
        + "448,UK,0.03,USD,2025-01-01\n"
        + "447,UK,0.04,USD,2025-01-01\n",
    )
    with pytest.raises(DeckError, match=r":4: prefix 447 effective 2025-01-01 repeats line 2"):
        load_deck(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file"),
        ("prefix,destination,price,currency\n", "header is"),
        ("Prefix,Destination,Price,Currency,Effective_From\n", "it must be exactly"),
    ],
)
def test_bad_header(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(DeckError, match=problem) as info:
        load_deck(write(tmp_path, text))
    assert info.value.line == 1


def test_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(DeckError, match="rate deck file not found"):
        load_deck(tmp_path / "nope.csv")
    p = tmp_path / "latin.csv"
    p.write_bytes(HEADER.encode() + "44,Fran\xe7e,0.02,USD,2025-01-01\n".encode("latin-1"))
    with pytest.raises(DeckError, match="not UTF-8"):
        load_deck(p)


def test_in_force_ignores_future_rows() -> None:
    rows = list(
        parse_rows([HEADER, "1,US,0.01,USD,2025-01-01\n", "1,US,0.02,USD,2026-01-01\n"], "mem.csv")
    )
    assert in_force(rows, dt.date(2025, 12, 31))["1"].price == 0.01
    assert in_force(rows, dt.date(2026, 1, 1))["1"].price == 0.02
