"""Valid mobile numbers built from the network's real deck prefixes (set-up time only).

For every deck prefix, a few *stems* are drawn: the prefix padded with random digits up
to four digits short of a mobile number's full length, kept only when whole numbers on
that stem are valid mobile numbers of one country (the country from the router's own
country table, the mobile pattern and lengths from ``phonenumbers`` metadata). A message
then costs one choice of stem and four random digits: no ``phonenumbers`` per message.

Each stem also carries the cheapest price per segment any carrier quotes for it (every
carrier at its own longest matching prefix), so price caps can be drawn around it.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from router.contracts import network_file
from router.core.deck import load_deck
from router.core.e164 import CountryData, load_country_data

TAIL_DIGITS = 4  # random digits appended per message
STEMS_PER_PREFIX = 4
PREFIXES_PER_REGION = 32  # a seeded sample of a country's prefixes is plenty of variety
STEMS_PER_REGION = 96  # x 10,000 numbers each
TRIES_PER_STEM = 6
CHECKS_PER_STEM = 3  # random completions that must all be valid


class NumberPlanError(Exception):
    """The network gives no usable prefixes; the message says which directory and why."""


@dataclass(frozen=True, slots=True)
class Stem:
    digits: str  # country code included, no '+'
    tail: int  # random digits to append
    price: float  # cheapest price per segment for this stem (USD)


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """Stems by ISO region, and each region's deck prefix count (a proxy for its size)."""

    stems: dict[str, tuple[Stem, ...]]
    prefix_counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Mobile:
    pattern: re.Pattern[str]
    lengths: tuple[int, ...]  # national significant number lengths


def _country_code(prefix: str) -> str | None:
    for n in (1, 2, 3):
        if n <= len(prefix) and int(prefix[:n]) in COUNTRY_CODE_TO_REGION_CODE:
            return prefix[:n]
    return None


_mobile_cache: dict[str, _Mobile | None] = {}


def _mobile(region: str) -> _Mobile | None:
    if region not in _mobile_cache:
        meta = PhoneMetadata.metadata_for_region(region)
        desc = meta.mobile if meta is not None else None
        pattern = desc.national_number_pattern if desc is not None else None
        lengths = tuple(desc.possible_length or ()) if desc is not None else ()
        if not lengths and meta is not None and meta.general_desc is not None:
            lengths = tuple(meta.general_desc.possible_length or ())
        lengths = tuple(n for n in lengths if n > 0)
        _mobile_cache[region] = (
            _Mobile(re.compile(f"(?:{pattern})"), lengths) if pattern and lengths else None
        )
    return _mobile_cache[region]


def is_mobile(digits: str, countries: CountryData) -> str | None:
    """The region if ``digits`` (E.164 without '+') is a valid mobile number there."""
    region = countries.country_of(digits)
    if region is None or region.startswith("001"):
        return None
    cc = _country_code(digits)
    mobile = _mobile(region)
    if cc is None or mobile is None:
        return None
    national = digits[len(cc) :]
    if len(national) not in mobile.lengths or not mobile.pattern.fullmatch(national):
        return None
    return region


def read_decks(directory: Path, as_of: dt.date | None = None) -> dict[str, dict[str, float]]:
    """Per carrier, prefix -> price per segment in force on ``as_of`` (default: today),
    read by the router's own deck reader (``router.core.deck``; a bad row raises its
    ``DeckError``), so the stems are priced as the router will quote them."""
    spec = network_file.load(directory)
    return {
        carrier.id: {
            p: rate.price for p, rate in load_deck(directory / carrier.deck, as_of).items()
        }
        for carrier in spec.carriers
    }


class _Prices:
    """Cheapest price per segment over carriers, each at its own longest matching prefix."""

    def __init__(self, decks: dict[str, dict[str, float]]) -> None:
        self._by_prefix: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for carrier, deck in decks.items():
            for prefix, price in deck.items():
                self._by_prefix[prefix].append((carrier, price))

    def cheapest(self, digits: str) -> float | None:
        seen: set[str] = set()
        best: float | None = None
        for n in range(len(digits), 0, -1):
            for carrier, price in self._by_prefix.get(digits[:n], ()):
                if carrier in seen:
                    continue
                seen.add(carrier)
                if best is None or price < best:
                    best = price
        return best


def _draw_stems(
    prefix: str, rng: random.Random, countries: CountryData, prices: _Prices, limit: int
) -> list[tuple[str, Stem]]:
    cc = _country_code(prefix)
    if cc is None:
        return []
    main = countries.country_of(prefix) or ""
    mobile = _mobile(main) or _mobile(COUNTRY_CODE_TO_REGION_CODE[int(cc)][0])
    if mobile is None:
        return []
    found: dict[str, tuple[str, Stem]] = {}
    # A country-wide prefix covers a whole country: more stems, and most draws miss.
    short = len(prefix) - len(cc) <= 1
    wanted = min(limit, STEMS_PER_PREFIX * (8 if short else 1))
    misses, tries = 0, 0
    while len(found) < wanted and misses < TRIES_PER_STEM * (4 if short else 1):
        tries += 1
        if tries > 4 * TRIES_PER_STEM * wanted:
            break
        total = len(cc) + rng.choice(mobile.lengths)
        tail = min(TAIL_DIGITS, total - len(prefix))
        if tail < 1:
            misses += 1
            continue
        pad = total - tail - len(prefix)
        stem = prefix + (f"{rng.randrange(10**pad):0{pad}d}" if pad else "")
        if stem in found:
            misses += 1
            continue
        region = is_mobile(stem + f"{rng.randrange(10**tail):0{tail}d}", countries)
        if region is None or any(
            is_mobile(stem + f"{rng.randrange(10**tail):0{tail}d}", countries) != region
            for _ in range(CHECKS_PER_STEM - 1)
        ):
            misses += 1
            continue
        price = prices.cheapest(stem)
        if price is None:
            misses += 1
        else:
            found[stem] = (region, Stem(stem, tail, price))
    return list(found.values())


def build_plan(
    directory: Path,
    seed: int,
    as_of: dt.date | None = None,
    countries: CountryData | None = None,
) -> NumberPlan:
    """Stems for every region the network reaches, seeded: same seed, same stems."""
    countries = countries or load_country_data()
    decks = read_decks(directory, as_of)
    prices = _Prices(decks)
    by_region: dict[str, set[str]] = defaultdict(set)
    for prefix in set().union(*decks.values()):
        region = countries.country_of(prefix)
        if region is not None:
            by_region[region].add(prefix)
    stems: dict[str, dict[str, Stem]] = defaultdict(dict)
    for region in sorted(by_region):
        rng = random.Random(f"{seed}/stems/{region}")
        prefixes = sorted(by_region[region])
        if len(prefixes) > PREFIXES_PER_REGION:
            prefixes = rng.sample(prefixes, PREFIXES_PER_REGION)
        for prefix in prefixes:
            room = STEMS_PER_REGION - len(stems.get(region, ()))
            if room <= 0:
                break
            for actual, stem in _draw_stems(prefix, rng, countries, prices, room):
                stems[actual].setdefault(stem.digits, stem)
    if not stems:
        raise NumberPlanError(
            f"{directory}: no deck prefix yields a valid mobile number; is this a network "
            "directory with decks (see `supernet network generate`)?"
        )
    return NumberPlan(
        stems={r: tuple(s[k] for k in sorted(s)) for r, s in sorted(stems.items()) if s},
        prefix_counts={r: len(p) for r, p in by_region.items() if r in stems},
    )
