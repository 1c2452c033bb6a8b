"""A generated network directory as the simulator reads it: select, load, describe."""

from __future__ import annotations

import datetime as dt
import fnmatch
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import phonenumbers

from carriers import deck, numbering, simulation
from carriers.endpoint import Endpoint
from carriers.ledger import Ledger
from router.contracts import network_file
from router.contracts.network_file import CarrierSpec
from router.core.deck import read_rows


class SelectionError(Exception):
    """The selection of carriers is empty or malformed."""


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 0 <= K < N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SelectionError(f"shard {text!r} must look like K/N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise SelectionError(f"shard {text!r}: need 0 <= K < N")
    return k, n


def select(
    carriers: Iterable[CarrierSpec], only: str | None = None, shard: tuple[int, int] | None = None
) -> list[CarrierSpec]:
    """Carriers whose id matches one of the comma-separated globs in ``only``, and that
    fall in ``shard`` (a stable hash of the id), so several processes can split a network."""
    patterns = [p.strip() for p in only.split(",")] if only else ["*"]
    chosen = [c for c in carriers if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]
    if shard is not None:
        k, n = shard
        chosen = [c for c in chosen if zlib.crc32(c.id.encode()) % n == k]
    return chosen


def load_endpoints(
    directory: Path,
    only: str | None = None,
    shard: tuple[int, int] | None = None,
    now: float = 0.0,
    as_of: dt.date | None = None,
) -> tuple[dict[str, Endpoint], Ledger]:
    """Read network.json, simulation.json and the selected carriers' decks, each carrier
    billing the deck rows in force on ``as_of`` (default: today, as the router loads)."""
    network = network_file.load(directory)
    truths = {t.id: t for t in simulation.load(directory).carriers}
    specs = select(network.carriers, only, shard)
    if not specs:
        raise SelectionError(f"no carrier of {directory} matches --only {only!r} / shard {shard}")
    ledger = Ledger(c.id for c in specs)
    endpoints: dict[str, Endpoint] = {}
    for spec in specs:
        truth = truths.get(spec.id)
        if truth is None:
            raise simulation.SimulationFileError(
                f"{directory}: carrier {spec.id} has no entry in {simulation.SIMULATION_FILE}"
            )
        prices = deck.read_prices(directory / spec.deck, as_of)
        endpoints[spec.id] = Endpoint(spec, truth, prices, ledger[spec.id], now)
    return endpoints, ledger


@dataclass(frozen=True, slots=True)
class Stats:
    carriers: int
    direct: int
    aggregators: int
    prefixes: int  # distinct prefixes over all decks
    direct_prefixes: int  # distinct prefixes over the direct carriers' decks
    country_codes: int  # distinct country calling codes over all decks
    regions: int  # distinct ISO regions the carriers cover
    rate_lines: int
    direct_rate_lines: int
    aggregator_rate_lines: int
    seed: int | None


def stats(directory: Path) -> Stats:
    network = network_file.load(directory)
    prefixes: set[str] = set()
    direct_prefixes: set[str] = set()
    codes: set[int] = set()
    regions: set[str] = set()
    lines = {"direct": 0, "aggregator": 0}
    for spec in network.carriers:
        regions.update(spec.countries)
        deck_prefixes = {row.prefix for row in read_rows(directory / spec.deck)}  # any date
        lines[spec.kind] += len(deck_prefixes)
        prefixes.update(deck_prefixes)
        if spec.kind == "direct":
            direct_prefixes.update(deck_prefixes)
    for prefix in prefixes:
        codes.add(numbering.country_code_of(prefix))
    kinds = [c.kind for c in network.carriers]
    return Stats(
        carriers=len(kinds),
        direct=kinds.count("direct"),
        aggregators=kinds.count("aggregator"),
        prefixes=len(prefixes),
        direct_prefixes=len(direct_prefixes),
        country_codes=len(codes),
        regions=len(regions),
        rate_lines=lines["direct"] + lines["aggregator"],
        direct_rate_lines=lines["direct"],
        aggregator_rate_lines=lines["aggregator"],
        seed=network.seed,
    )


def reduce_network(src: Path, dst: Path, regions: set[str]) -> Path:
    """A smaller network for tests: the carriers that serve ``regions`` (ISO codes), the
    directs whole and the aggregators' deck lines for those regions' country codes only,
    with the same prices and the same hidden truth. Returns ``dst``."""
    codes = {str(phonenumbers.country_code_for_region(r)) for r in regions}
    spec = network_file.load(src)
    kept: list[network_file.CarrierSpec] = []
    (dst / "decks").mkdir(parents=True, exist_ok=True)
    for c in spec.carriers:
        if not set(c.countries) & regions:
            continue
        rows = read_rows(src / c.deck)
        body = [row for row in rows if any(row.prefix.startswith(code) for code in codes)]
        if not body:
            continue
        (dst / c.deck).write_bytes(deck.render_rows(body))
        kept.append(msgspec.structs.replace(c, countries=sorted(set(c.countries) & regions)))
    network_file.dump(msgspec.structs.replace(spec, carriers=kept), dst)
    sim = simulation.load(src)
    ids = {c.id for c in kept}
    simulation.dump(
        msgspec.structs.replace(sim, carriers=[t for t in sim.carriers if t.id in ids]), dst
    )
    return dst
