"""What every policy of the economics run shares: the traffic and the simulated network.

``prepare`` draws the requests once (the load generator's seeded traffic model) and
checks each against the route table with the routing core's own ``validate``, so every
policy sees the same requests and the same refusals. ``Network`` loads a network
directory once and builds fresh simulated carriers (``carriers.endpoint.Endpoint``) for
each policy, every random stream from its carrier's seed. ``true_estimate`` is what the
simulator really does towards a country, for the oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import phonenumbers

from carriers import deck, simulation
from carriers.endpoint import SUBMIT_LATENCY_SIGMA, Endpoint
from carriers.ledger import Ledger
from carriers.simulation import CarrierTruth
from router.contracts import network_file
from router.core.network import load_network
from router.core.table import RouteTable
from router.core.types import CLASS_INDEX, Quote
from router.core.validation import validate
from router.tools.load.mix import Mix
from router.tools.load.numbers import build_plan
from router.tools.load.traffic import Traffic

MAX_HOLD_S: Final = 60.0  # a held request without a validity period gives up after this
WALL_BASE_MS: Final = 1_763_740_800_000  # wall clock at virtual time 0 (created_at, ts)


@dataclass(frozen=True, slots=True)
class Job:
    """One request, prepared once and shared by every policy."""

    id: str
    to: str
    body: str
    account: str
    cls: int  # policy.CLASSES index
    max_price: float | None
    at: float  # virtual arrival time, seconds
    deadline: float  # virtual time past which it may not be submitted (validity)
    code: int  # 0: has a route; else the refusal code every policy gives
    segments: int
    encoding: str
    country: str  # ISO region of the destination ("" when refused)
    quotes: tuple[Quote, ...]  # every carrier within max_price (empty when refused)


def prepare(table: RouteTable, count_: int, seed: int, rate: float, network: Path) -> list[Job]:
    """``count_`` requests from the load generator's default mix, arriving evenly at
    ``rate`` per second of virtual time, each checked against the table once."""
    traffic = Traffic(build_plan(network, seed), Mix(), seed, "econ-")
    jobs = []
    for i in range(count_):
        at = i / rate
        r = traffic.next(created_at=WALL_BASE_MS + round(at * 1000))
        deadline = at + r.validity_s if r.validity_s is not None else at + MAX_HOLD_S
        code, segs, enc, country, quotes = check(table, r.to, r.body, r.max_price)
        cls = CLASS_INDEX[r.cls]
        account = r.account or ""
        job = Job(r.id, r.to, r.body, account, cls, r.max_price, at, deadline, code, segs, enc,
                  country, quotes)  # fmt: skip
        jobs.append(job)
    return jobs


def check(
    table: RouteTable, to: str, body: str, max_price: float | None
) -> tuple[int, int, str, str, tuple[Quote, ...]]:
    """(code, segments, encoding, country, affordable quotes): ``validate``, the
    stateless part of ``Router.decide`` (its refusals do not depend on health or
    throttles), plus the quotes within ``max_price``; country and quotes are empty for a
    refused message."""
    code, _, _, segs, enc, e = validate(table, to, body, max_price)
    if code:
        return code, segs, enc, "", ()
    quotes = tuple(q for q in e.quotes if max_price is None or q.price * segs <= max_price)
    return 0, segs, enc, e.country, quotes


class Network:
    """A network directory loaded once: the route table, and what builds fresh carriers.

    The simulator's prices are the deck rows in force on the same day as the router's
    (``carriers.deck.read_prices`` and ``load_network`` read decks with the same reader),
    so a carrier bills what the router quoted."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.table = load_network(directory)
        spec = network_file.load(directory)
        self.specs = {c.id: c for c in spec.carriers}
        self.truths = {t.id: t for t in simulation.load(directory).carriers}
        self.prices = {c.id: deck.read_prices(directory / c.deck) for c in spec.carriers}
        self._truth_cache: dict[tuple[str, str], tuple[float, float]] = {}

    def endpoints(self) -> tuple[dict[str, Endpoint], Ledger]:
        """Fresh endpoints (as ``carriers.network.load_endpoints`` builds them): full
        buckets at virtual time 0, every random stream from its carrier's seed."""
        ledger = Ledger(self.specs)
        return {
            cid: Endpoint(spec, self.truths[cid], self.prices[cid], ledger[cid], 0.0)
            for cid, spec in self.specs.items()
        }, ledger

    def truth(self, carrier: str, country: str) -> tuple[float, float]:
        """(true delivery probability, true mean submit-to-report seconds) of ``carrier``
        towards the ISO region ``country``, from ``simulation.json``."""
        key = (carrier, country)
        hit = self._truth_cache.get(key)
        if hit is None:
            hit = self._truth_cache[key] = true_estimate(self.truths[carrier], country)
        return hit


def true_estimate(truth: CarrierTruth, country: str) -> tuple[float, float]:
    """What ``Endpoint`` really does towards ``country``: its delivery probability and
    the mean of submit latency plus report delay (both lognormal), in seconds."""
    code = phonenumbers.country_code_for_region(country) if len(country) == 2 else 0
    dest = truth.destinations.get(str(code)) if code else None
    probability, factor = (
        (dest.delivery_probability, dest.latency_factor)
        if dest is not None
        else (truth.delivery_probability, 1.0)
    )
    submit_s = truth.submit_latency_ms * math.exp(SUBMIT_LATENCY_SIGMA**2 / 2) / 1000.0
    report_s = truth.report_delay_ms * factor * math.exp(truth.report_delay_sigma**2 / 2) / 1000.0
    return probability, submit_s + report_s
