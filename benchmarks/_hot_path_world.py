"""The hot-path benchmark's world: a synthetic network, its traffic and the baselines.

Decks of any size across >= 1,000 carriers are synthesised from the real mobile prefixes
in ``phonenumbers`` (operators become direct carriers; 60 aggregators resell regions),
with number blocks below the operator prefixes as decks grow. Traffic is skewed by
country (Zipf), then by operator. The baselines: (a) ``Naive``, probe every prefix
length, score and sort per message; (b) ``Sql``, one SQLite query per message. See
``benchmarks/hot_path.py``, which measures them against the router.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass

from router.contracts.codes import Code
from router.core.e164 import CountryData
from router.core.health import Health
from router.core.policy import score
from router.core.segments import ASCII_BASIC, PART_GSM7, count
from router.core.throttle import Throttle, bucket_params
from router.core.types import Carrier

Request = tuple[str, str, int, float | None]
Decks = dict[str, dict[str, tuple[float, str]]]


# -- synthetic network and traffic ------------------------------------------------------


@dataclass
class Network:
    carriers: dict[str, Carrier]
    decks: Decks
    lines: int


def operators(countries: CountryData) -> dict[str, list[str]]:
    """(region|operator) -> its real mobile prefixes, from phonenumbers' carrier data."""
    from phonenumbers.carrierdata import CARRIER_DATA

    ops: dict[str, list[str]] = {}
    for prefix, names in CARRIER_DATA.items():
        name = names.get("en")
        region = countries.country_of(prefix)
        if not name or region is None:
            continue
        ops.setdefault(f"{region}|{name}", []).append(prefix)
    return ops


def build_network(lines: int, countries: CountryData, seed: int) -> Network:
    rng = random.Random(seed)
    ops = operators(countries)
    regions = sorted({k.split("|")[0] for k in ops})
    base_price = {r: round(rng.uniform(0.002, 0.08), 4) for r in regions}
    cc_of = {r: p for p, r in sorted(countries.regions.items(), key=lambda x: -len(x[0]))}
    carriers: dict[str, Carrier] = {}
    seeds: dict[str, list[str]] = {}  # carrier -> the prefixes its deck starts from
    for i, (key, prefixes) in enumerate(sorted(ops.items())):
        cid = f"d{i}"
        carriers[cid] = Carrier(
            cid, key, "direct", rng.uniform(0.8, 3.0), rng.uniform(0.9, 0.99),
            rng.choice([50.0, 100.0, 200.0, 500.0]),
        )  # fmt: skip
        seeds[cid] = prefixes
    for a in range(60):
        cid = f"agg{a}"
        carriers[cid] = Carrier(
            cid, cid, "aggregator", rng.uniform(2.0, 8.0), rng.uniform(0.75, 0.95),
            rng.choice([500.0, 1000.0, 2000.0]),
        )  # fmt: skip
        covered = rng.sample(regions, k=min(len(regions), rng.randint(20, 120)))
        own = [cc_of[r] for r in covered if r in cc_of]
        own += [p for k, ps in ops.items() if k.split("|")[0] in covered for p in ps]
        seeds[cid] = own
    decks: Decks = {cid: {} for cid in carriers}
    region_of = countries.country_of
    total = 0
    for cid, prefixes in seeds.items():
        markup = rng.uniform(0.85, 1.3)
        for p in prefixes:
            r = region_of(p) or "ZZ"
            decks[cid][p] = (round(base_price.get(r, 0.05) * markup, 5), r)
            total += 1
    # grow the decks with number blocks below their prefixes until `lines` is reached
    ids = list(carriers)
    while total < lines:
        cid = rng.choice(ids)
        deck = decks[cid]
        if not deck:
            continue
        parent = rng.choice(seeds[cid])
        block = parent + str(rng.randrange(10 ** rng.randint(1, 3))).zfill(rng.randint(1, 3))
        if block in deck or len(block) > 12:
            continue
        price, r = deck[parent]
        deck[block] = (round(price * rng.uniform(0.8, 1.2), 5), r)
        total += 1
    if total > lines:  # small sizes: keep the busiest seeds only
        excess = total - lines
        for cid in reversed(ids):
            deck = decks[cid]
            while deck and excess:
                deck.popitem()
                excess -= 1
        total = lines
    return Network(carriers, decks, total)


BODIES = [
    "Your verification code is {n}. Do not share it with anyone.",
    "{n} is your login code",
    "Your order #{n} has shipped and will arrive tomorrow between 9am and 1pm. Track it at "
    "https://example.com/t/{n} or reply STOP to opt out of delivery updates from us.",
    "Hello! Our spring sale starts now: up to 50% off everything in store and online until "
    "Sunday night. Show this message at the till or use code SPRING{n} at checkout. Terms "
    "apply, see example.com/terms. Reply STOP to unsubscribe from marketing messages.",
    "Votre code est {n}. Valable 10 minutes. Ne le partagez pas.",
    "Ihr Code lautet {n}. Gültig für 10 Minuten.",
    "Total due: €{n} [invoice] ~ pay by Friday",
    "Tu código es {n} 🔐",
    "您的验证码是{n}",
]


def traffic(net: Network, countries: CountryData, n: int, seed: int) -> list[Request]:
    rng = random.Random(seed + 1)
    ops = operators(countries)
    by_region: dict[str, list[list[str]]] = {}
    for key, prefixes in sorted(ops.items()):
        by_region.setdefault(key.split("|")[0], []).append(prefixes)
    regions = sorted(by_region)
    rng.shuffle(regions)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(regions))]  # Zipf by country
    out: list[Request] = []
    for region in rng.choices(regions, weights, k=n):
        op = rng.choice(by_region[region])
        prefix = rng.choice(op)
        total = max(countries.valid_lengths(region))
        number = prefix + "".join(rng.choice("0123456789") for _ in range(total - len(prefix)))
        body = rng.choices(BODIES, [30, 25, 15, 8, 6, 5, 4, 4, 3])[0].format(
            n=rng.randrange(100_000, 1_000_000)
        )
        cls = rng.choices((0, 1, 2), (40, 40, 20))[0]
        cap = rng.choice((0.02, 0.05, 0.2)) if rng.random() < 0.2 else None
        out.append(("+" + number, body, cls, cap))
    return out


# -- the three implementations ----------------------------------------------------------


def destination_and_segments(to: str, body: str) -> tuple[str, int] | int:
    """The shared front of the baselines: same checks as the router's fast path."""
    d = to[1:]
    if not (d.isdigit() and d.isascii() and to[0] == "+" and 7 <= len(d) <= 15):
        return Code.INVALID_DESTINATION
    nb = len(body)
    if body.isascii() and 0 < nb <= 1600 and not body.encode().translate(None, ASCII_BASIC):
        return d, (1 if nb <= 160 else -(-nb // PART_GSM7))
    sg = count(body)
    return (d, sg.segments) if not sg.code else sg.code


class Naive:
    """Baseline (a): probe every length, collect, score and sort per message."""

    def __init__(self, net: Network, countries: CountryData) -> None:
        self.index: dict[str, list[tuple[str, float]]] = {}
        for cid, deck in net.decks.items():
            for p, (price, _) in deck.items():
                self.index.setdefault(p, []).append((cid, price))
        self.carriers = net.carriers
        self.countries = countries
        self.health = Health()
        self.throttle = Throttle()
        self.params = {cid: bucket_params(c) for cid, c in net.carriers.items()}

    def decide(self, to: str, body: str, cls: int, cap: float | None, now: float) -> object:
        front = destination_and_segments(to, body)
        if isinstance(front, int):
            return front
        d, segs = front
        country = self.countries.country_of(d)
        if country is None or len(d) not in self.countries.valid_lengths(country):
            return Code.INVALID_DESTINATION
        seen: dict[str, float] = {}
        for n in range(len(d), 0, -1):
            for cid, price in self.index.get(d[:n], ()):
                if cid not in seen:
                    seen[cid] = price
        scored = []
        for cid, price in seen.items():
            if cid in self.health.unavailable:
                continue
            rate, latency = self.health.estimate(self.carriers[cid], country)
            scored.append((score(price, rate, latency, cls), price, cid))
        scored.sort()
        for _, price, cid in scored:
            if cap is None or price * segs <= cap:
                interval, tau = self.params[cid]
                if self.throttle.take(cid, interval, tau, now):
                    return cid
        return Code.NO_ROUTE


class Sql:
    """Baseline (b): the per-message SQL query of database-backed least-cost routers."""

    def __init__(self, net: Network) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE rates (prefix TEXT, carrier TEXT, price REAL)")
        self.db.executemany(
            "INSERT INTO rates VALUES (?, ?, ?)",
            ((p, cid, price) for cid, deck in net.decks.items() for p, (price, _) in deck.items()),
        )
        self.db.execute("CREATE INDEX rates_prefix ON rates (prefix)")
        self.queries = {
            n: "SELECT carrier, price FROM rates WHERE prefix IN ({}) "
            "ORDER BY length(prefix) DESC, price".format(",".join("?" * n))
            for n in range(1, 16)
        }
        self.unavailable: set[str] = set()
        self.throttle = Throttle()
        self.params = {cid: bucket_params(c) for cid, c in net.carriers.items()}

    def decide(self, to: str, body: str, cls: int, cap: float | None, now: float) -> object:
        front = destination_and_segments(to, body)
        if isinstance(front, int):
            return front
        d, segs = front
        prefixes = [d[:n] for n in range(1, len(d) + 1)]
        rows = self.db.execute(self.queries[len(prefixes)], prefixes).fetchall()
        seen: set[str] = set()
        for cid, price in rows:  # first row per carrier = its longest prefix
            if cid in seen:
                continue
            seen.add(cid)
            if cid in self.unavailable or (cap is not None and price * segs > cap):
                continue
            interval, tau = self.params[cid]
            if self.throttle.take(cid, interval, tau, now):
                return cid
        return Code.NO_ROUTE
