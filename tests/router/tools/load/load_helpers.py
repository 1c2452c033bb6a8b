"""A tiny network for the load generator's tests (unit and integration)."""

from __future__ import annotations

from pathlib import Path

from router.contracts import network_file
from router.contracts.network_file import CarrierKind, CarrierSpec, NetworkFile

DECKS: dict[str, tuple[list[str], list[str]]] = {
    # carrier id: (countries, deck rows "prefix,destination,price,currency,effective_from")
    "us-one": (["US"], ["1,United States - Mobile,0.0060,USD,2025-01-01"]),
    "gb-one": (["GB"], ["447700,United Kingdom - Mobile,0.0300,USD,2025-01-01",
                        "447400,United Kingdom - Mobile,0.0320,USD,2025-01-01"]),
    "in-one": (["IN"], ["9198,India - Mobile,0.0030,USD,2025-01-01",
                        "9170,India - Mobile,0.0029,USD,2025-01-01",
                        "9170,India - Mobile,0.0010,USD,2999-01-01"]),
    "de-one": (["DE"], ["49151,Germany - Mobile,0.0780,USD,2025-01-01",
                        "49170,Germany - Mobile,0.0780,USD,2025-01-01"]),
    "br-one": (["BR"], ["55119,Brazil - Mobile,0.0190,USD,2025-01-01"]),
    "agg-one": (["GB", "DE", "FR"], ["44,United Kingdom,0.0280,USD,2025-01-01",
                                     "49,Germany,0.0550,USD,2025-01-01",
                                     "33,France,0.0650,USD,2025-01-01"]),
}  # fmt: skip


def write_network(directory: Path) -> Path:
    (directory / "decks").mkdir(parents=True)
    carriers = []
    for cid, (countries, rows) in DECKS.items():
        deck = f"decks/{cid}.csv"
        header = "prefix,destination,price,currency,effective_from"
        (directory / deck).write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        kind: CarrierKind = "aggregator" if cid.startswith("agg") else "direct"
        carriers.append(CarrierSpec(cid, cid, kind, countries, deck, 1000.0, 0.95, 100.0))
    network_file.dump(
        NetworkFile(version=network_file.FORMAT_VERSION, name="t", carriers=carriers), directory
    )
    return directory
