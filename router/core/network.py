"""Load a network directory (``router.contracts.network_file`` contract) into a route table."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

from router.contracts import network_file
from router.core.deck import load_deck
from router.core.e164 import CountryData, load_country_data
from router.core.errors import NetworkError
from router.core.table import RouteTable
from router.core.types import Carrier


def example_network() -> Path:
    """The small example network shipped in the package."""
    return Path(str(resources.files("router.examples").joinpath("network")))


def carriers_of(spec: network_file.NetworkFile) -> dict[str, Carrier]:
    return {
        c.id: Carrier(
            c.id, c.name, c.kind, c.latency_ms / 1000.0, c.delivery_rate, c.throughput_mps
        )
        for c in spec.carriers
    }


def load_network(
    directory: Path,
    as_of: dt.date | None = None,
    countries: CountryData | None = None,
) -> RouteTable:
    """Read ``network.json`` and every deck, and compile the route table.

    Raises ``NetworkError`` for a bad description and ``DeckError`` for a bad deck row.
    """
    try:
        spec = network_file.load(directory)
    except network_file.NetworkFileError as e:
        raise NetworkError(str(e)) from None
    if spec.currency != "USD":
        raise NetworkError(
            f"{directory}: currency {spec.currency!r} is not supported; only USD networks are"
        )
    day = as_of or dt.date.today()
    decks = {}
    for c in spec.carriers:
        rates = load_deck(directory / c.deck, day)
        decks[c.id] = {p: (r.price, r.destination) for p, r in rates.items()}
    return RouteTable(carriers_of(spec), decks, countries or load_country_data())
