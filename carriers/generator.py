"""Seeded, reproducible generation of the super network.

- Direct carriers: one per (country, operator) of the real numbering data
  (`carriers.numbering`), on the operator's real prefixes, priced around a per-country
  base price.
- Aggregators: global ones and regional ones (by ITU world zone), each pricing every
  country it resells with a country-code line plus one line per operator prefix; some
  cheaper and some dearer than the directs, slower and less reliable on average, with a
  true delivery probability and latency that differ by destination.

Every random draw comes from a ``random.Random`` seeded with a string derived from the
network seed and the thing being drawn (a country code, a carrier id), so one carrier's
numbers never depend on the order in which others were drawn, and the same seed gives
the same files byte for byte.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from carriers import deck, numbering
from carriers.simulation import SIMULATION_VERSION, CarrierTruth, DestinationTruth, SimulationFile
from carriers.simulation import dump as dump_simulation
from router.contracts.network_file import FORMAT_VERSION, CarrierSpec, NetworkFile
from router.contracts.network_file import dump as dump_network

DECKS_DIR = "decks"

# ITU world zones, by the first digit of the country calling code.
ZONES: dict[str, tuple[str, frozenset[str]]] = {
    "am": ("Americas", frozenset("15")),
    "af": ("Africa", frozenset("2")),
    "eu": ("Europe", frozenset("347")),
    "ap": ("Asia-Pacific", frozenset("68")),
    "me": ("Middle East and South Asia", frozenset("9")),
}


@dataclass(frozen=True, slots=True)
class AggregatorProfile:
    """What kind of reseller an aggregator is; the numbers are drawn around these."""

    id: str
    name: str
    zone: str | None  # None: global
    price_factor: float  # x the country base price (< 1 cheaper than directs)
    reliability: float  # mean true delivery probability over its destinations
    report_delay_ms: float
    throughput_mps: float


AGGREGATORS: tuple[AggregatorProfile, ...] = (
    AggregatorProfile("agg-global-1", "Global Aggregator 1 (budget)", None, 0.78, 0.86, 4500, 2500),
    AggregatorProfile(
        "agg-global-2", "Global Aggregator 2 (premium)", None, 1.22, 0.95, 2500, 2000
    ),
    AggregatorProfile("agg-global-3", "Global Aggregator 3 (grey)", None, 0.66, 0.76, 7000, 3000),
    AggregatorProfile("agg-global-4", "Global Aggregator 4", None, 1.02, 0.9, 3500, 2000),
    AggregatorProfile("agg-global-5", "Global Aggregator 5 (tier 1)", None, 1.35, 0.97, 2000, 1500),
    AggregatorProfile("agg-global-6", "Global Aggregator 6", None, 0.92, 0.88, 4000, 2000),
    AggregatorProfile("agg-am-1", "Americas Aggregator 1", "am", 0.88, 0.9, 3000, 1200),
    AggregatorProfile("agg-am-2", "Americas Aggregator 2 (budget)", "am", 0.74, 0.82, 5500, 1500),
    AggregatorProfile("agg-af-1", "Africa Aggregator 1", "af", 0.95, 0.88, 4000, 800),
    AggregatorProfile("agg-af-2", "Africa Aggregator 2 (budget)", "af", 0.8, 0.8, 6500, 800),
    AggregatorProfile("agg-eu-1", "Europe Aggregator 1", "eu", 0.9, 0.93, 2500, 1500),
    AggregatorProfile("agg-eu-2", "Europe Aggregator 2 (premium)", "eu", 1.15, 0.96, 2000, 1200),
    AggregatorProfile("agg-ap-1", "Asia-Pacific Aggregator 1", "ap", 0.85, 0.89, 3500, 1500),
    AggregatorProfile(
        "agg-ap-2", "Asia-Pacific Aggregator 2 (premium)", "ap", 1.1, 0.94, 3000, 1000
    ),
    AggregatorProfile("agg-me-1", "Middle East Aggregator 1", "me", 0.9, 0.87, 4000, 1000),
    AggregatorProfile("agg-me-2", "Middle East Aggregator 2 (budget)", "me", 0.76, 0.8, 6000, 1000),
)


@dataclass(slots=True)
class Generated:
    """A whole network in memory: what `write` puts on disk."""

    network: NetworkFile
    simulation: SimulationFile
    decks: dict[str, list[deck.DeckLine]] = field(default_factory=dict)
    effective_from: str = ""


def _rng(seed: int, *key: object) -> random.Random:
    return random.Random(":".join([str(seed), *map(str, key)]))


def effective_date(seed: int) -> str:
    """A fixed date derived from the seed (never today), so output is reproducible."""
    return (dt.date(2025, 1, 1) + dt.timedelta(days=seed % 365)).isoformat()


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def zone_of(country_code: int) -> str:
    first = str(country_code)[0]
    for zone, (_, digits) in ZONES.items():
        if first in digits:
            return zone
    raise ValueError(f"country code {country_code} is in no world zone")


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def _base_price(seed: int, country_code: int) -> float:
    r = _rng(seed, "cc", country_code)
    return _clamp(r.lognormvariate(math.log(0.035), 0.75), 0.003, 0.25)


def _direct_truth(seed: int, carrier_id: str, n_prefixes: int) -> CarrierTruth:
    r = _rng(seed, "truth", carrier_id)
    delivery = r.uniform(0.9, 0.995) if r.random() < 0.9 else r.uniform(0.6, 0.9)
    throughput = _clamp(round((25 + 15 * math.sqrt(n_prefixes)) / 5) * 5, 20, 1000)
    return CarrierTruth(
        id=carrier_id,
        seed=r.getrandbits(32),
        delivery_probability=round(delivery, 4),
        submit_latency_ms=round(_clamp(r.lognormvariate(math.log(30), 0.5), 5, 300), 1),
        submit_failure_rate=round(r.uniform(0.001, 0.01), 4),
        report_delay_ms=round(_clamp(r.lognormvariate(math.log(1500), 0.4), 300, 8000), 1),
        report_delay_sigma=round(r.uniform(0.3, 0.7), 3),
        report_loss_rate=round(r.uniform(0.002, 0.03), 4),
        throughput_mps=float(throughput),
    )


def _advertise(truth: CarrierTruth, mean_delivery: float, optimism: float) -> tuple[float, float]:
    """What a carrier advertises: (latency_ms, delivery_rate), a little flattering."""
    expected_delay = truth.report_delay_ms * math.exp(truth.report_delay_sigma**2 / 2)
    latency = round((truth.submit_latency_ms + expected_delay) / optimism, 1)
    rate = round(_clamp(mean_delivery * optimism, 0.0, 0.999), 4)
    return latency, rate


def generate(seed: int) -> Generated:
    """Build the whole network for a seed (pure: no I/O)."""
    effective_from = effective_date(seed)
    ops = numbering.operator_prefixes()

    # (country code, region, operator) -> prefixes
    groups: dict[tuple[int, str, str], list[str]] = defaultdict(list)
    for op in ops:
        groups[(op.country_code, op.region, op.operator)].append(op.prefix)
    by_cc: dict[int, list[numbering.OperatorPrefix]] = defaultdict(list)
    for op in ops:
        by_cc[op.country_code].append(op)

    specs: list[CarrierSpec] = []
    truths: list[CarrierTruth] = []
    decks: dict[str, list[deck.DeckLine]] = {}
    used: set[str] = set()
    op_factor: dict[tuple[int, str], float] = {}

    for (cc, region, operator), prefixes in sorted(groups.items()):
        # libphonenumber's "001" is the world: non-geographic networks (+881, +882, ...)
        stem = "intl" if region == "001" else region.lower()
        base = f"{stem}-{slug(operator) or 'operator'}"[:60].rstrip("-")
        carrier_id, n = base, 2
        while carrier_id in used:
            carrier_id, n = f"{base}-{n}", n + 1
        used.add(carrier_id)
        r = _rng(seed, "price", carrier_id)
        factor = r.uniform(0.85, 1.15)
        op_factor[(cc, operator)] = factor
        price = deck.format_price(_base_price(seed, cc) * factor)
        label = f"{region} {operator}"
        decks[carrier_id] = [deck.DeckLine(p, label, price) for p in sorted(prefixes)]
        truth = _direct_truth(seed, carrier_id, len(prefixes))
        latency, rate = _advertise(truth, truth.delivery_probability, r.uniform(0.97, 1.03))
        truths.append(truth)
        specs.append(
            CarrierSpec(
                id=carrier_id,
                name=operator,
                kind="direct",
                countries=[region],
                deck=f"{DECKS_DIR}/{carrier_id}.csv",
                latency_ms=latency,
                delivery_rate=rate,
                throughput_mps=truth.throughput_mps,
            )
        )

    country_codes = sorted(set(numbering.geographic_country_codes()) | set(by_cc))
    for profile in AGGREGATORS:
        r = _rng(seed, "aggregator", profile.id)
        lines: list[deck.DeckLine] = []
        destinations: dict[str, DestinationTruth] = {}
        regions: set[str] = set()
        for cc in country_codes:
            if profile.zone is not None and zone_of(cc) != profile.zone:
                continue
            cc_regions = numbering.regions_of_country_code(cc)
            main = cc_regions[0] if cc_regions and cc_regions[0] != "001" else "INTL"
            regions.update(x for x in cc_regions if x != "001")
            rc = _rng(seed, "aggregator", profile.id, cc)
            country_price = _base_price(seed, cc) * profile.price_factor * rc.uniform(0.9, 1.12)
            # the country-wide (blended) line is dearer than the operator lines
            lines.append(
                deck.DeckLine(
                    str(cc), f"{main} all networks", deck.format_price(country_price * 1.1)
                )
            )
            for op in by_cc.get(cc, ()):
                factor = op_factor[(cc, op.operator)] * rc.uniform(0.97, 1.03)
                lines.append(
                    deck.DeckLine(
                        op.prefix,
                        f"{op.region} {op.operator}",
                        deck.format_price(country_price * factor),
                    )
                )
            destinations[str(cc)] = DestinationTruth(
                delivery_probability=round(
                    _clamp(rc.gauss(profile.reliability, 0.05), 0.4, 0.99), 4
                ),
                latency_factor=round(_clamp(rc.lognormvariate(0.0, 0.35), 0.4, 3.0), 3),
            )
        lines.sort(key=lambda line: line.prefix)
        decks[profile.id] = lines
        truth = CarrierTruth(
            id=profile.id,
            seed=r.getrandbits(32),
            delivery_probability=profile.reliability,
            submit_latency_ms=round(r.uniform(60, 200), 1),
            submit_failure_rate=round(r.uniform(0.005, 0.03), 4),
            report_delay_ms=round(profile.report_delay_ms * r.uniform(0.85, 1.15), 1),
            report_delay_sigma=round(r.uniform(0.5, 0.9), 3),
            report_loss_rate=round(r.uniform(0.02, 0.08), 4),
            throughput_mps=float(profile.throughput_mps),
            destinations=destinations,
        )
        mean_delivery = sum(d.delivery_probability for d in destinations.values()) / len(
            destinations
        )
        latency, rate = _advertise(truth, mean_delivery, r.uniform(1.02, 1.08))
        truths.append(truth)
        specs.append(
            CarrierSpec(
                id=profile.id,
                name=profile.name,
                kind="aggregator",
                countries=sorted(regions),
                deck=f"{DECKS_DIR}/{profile.id}.csv",
                latency_ms=latency,
                delivery_rate=rate,
                throughput_mps=truth.throughput_mps,
            )
        )

    network = NetworkFile(
        version=FORMAT_VERSION, name=f"supernet-seed-{seed}", carriers=specs, seed=seed
    )
    simulation = SimulationFile(version=SIMULATION_VERSION, seed=seed, carriers=truths)
    return Generated(network, simulation, decks, effective_from)


def write(generated: Generated, out: Path) -> None:
    """Write network.json, simulation.json and decks/*.csv; remove decks of other networks."""
    decks_dir = out / DECKS_DIR
    decks_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f"{cid}.csv" for cid in generated.decks}
    for stale in decks_dir.glob("*.csv"):
        if stale.name not in wanted:
            stale.unlink()
    for carrier_id, lines in generated.decks.items():
        deck.write(decks_dir / f"{carrier_id}.csv", lines, generated.effective_from)
    dump_network(generated.network, out)
    dump_simulation(generated.simulation, out)
