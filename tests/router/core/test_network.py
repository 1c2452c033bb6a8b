"""Loading network directories, and the table swap."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from router.core.decision import Router
from router.core.e164 import load_country_data
from router.core.errors import DeckError, NetworkError
from router.core.network import example_network, load_network


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
