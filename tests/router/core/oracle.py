"""Brute-force reference implementations: they scan every deck line, per message."""

from __future__ import annotations

from collections.abc import Mapping

from router.core.e164 import CountryData
from router.core.policy import score
from router.core.types import Carrier

Decks = Mapping[str, Mapping[str, tuple[float, str]]]


def candidates(digits: str, decks: Decks) -> dict[str, tuple[float, str]]:
    """Carrier -> (price, prefix) of its longest deck prefix that starts ``digits``."""
    found: dict[str, tuple[float, str]] = {}
    for cid, deck in decks.items():
        for prefix, (price, _) in deck.items():
            if digits.startswith(prefix) and len(prefix) > len(found.get(cid, (0.0, ""))[1]):
                found[cid] = (price, prefix)
    return found


def country(digits: str, countries: CountryData) -> str | None:
    best = ""
    for prefix in countries.regions:
        if digits.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return countries.regions[best] if best else None


def ranking(
    digits: str, decks: Decks, carriers: Mapping[str, Carrier], cls: int
) -> list[tuple[str, float]]:
    """(carrier, price) best first by the policy, from advertised figures."""
    found = candidates(digits, decks)
    scored = []
    for cid, (price, _) in found.items():
        c = carriers[cid]
        scored.append((score(price, c.delivery_rate, c.latency_s, cls), price, cid))
    scored.sort()
    return [(cid, price) for _, price, cid in scored]
