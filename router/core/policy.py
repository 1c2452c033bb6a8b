"""Routing policies: the order in which the router offers a destination's carriers.

A policy is an object passed to the router (``Router(table, policy=...)``); it implements
the ``Policy`` protocol below. The default, ``ExpectedCost``, ranks by expected cost per
delivered message plus the price of waiting and of failing, weighted by class. For a
carrier with price ``p`` (USD per segment), expected delivery rate ``r`` and expected
latency ``t`` (seconds) toward the destination country::

    score = p / max(r, R_MIN) + W_latency[class] * t + W_failure[class] * (1 - r)

Lower is better. ``p / r`` is the expected spend per *delivered* segment (failed sends
are paid for too). ``W_latency`` (USD per second) and ``W_failure`` (USD per failed
message) price what a slow or lost message costs the sender: an OTP that arrives late
or not at all is worth little, a marketing message mostly costs its price. Ties break on
price, then carrier id, so the order is deterministic.

Two simpler policies, the economics run's baselines, rank on price alone:
``CheapestFirst`` (any kind) and ``DirectFirst`` (direct carriers before aggregators).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, NamedTuple, Protocol

from router.core.types import (
    CLASS_INDEX,
    CLASSES,
    MARKETING,
    OTP,
    TRANSACTIONAL,
    BucketParams,
    Carrier,
    Estimate,
    Quote,
    Route,
)

__all__ = [
    "CLASSES",
    "CLASS_INDEX",
    "EXPECTED_COST",
    "MARKETING",
    "OTP",
    "R_MIN",
    "TRANSACTIONAL",
    "WEIGHTS",
    "BucketParams",
    "CheapestFirst",
    "DirectFirst",
    "Estimate",
    "ExpectedCost",
    "Policy",
    "Route",
    "Weights",
    "score",
]

R_MIN: Final = 0.01  # floor on the delivery rate so a failing carrier scores finitely


class Policy(Protocol):
    """What the router needs from a routing policy. To add one, write a class with these
    two methods and pass an instance: ``Router(table, policy=MyPolicy())``.

    ``rank`` turns every quote for one destination into a ``Route``, best first, for
    message class ``cls`` (an index into ``CLASSES``) toward the ISO region ``country``:

    - ``estimate(carrier, country)`` gives the carrier's expected (delivery rate, latency
      in seconds) as health currently publishes them; a policy may ignore it;
    - ``bucket(carrier)`` gives the token bucket's (interval, tau), to be copied into
      each Route unchanged (the router's throttle reads them);
    - return every quote (the router itself skips routes above ``max_price``, behind an
      open breaker or at their throughput cap), in a deterministic order;
    - be pure: the same quotes, class, country and estimates give the same routes. The
      router caches the result per table entry and class (and shares it between entries
      with the same quotes in the same country) until health publishes new estimates for
      that country, so ``rank`` runs once per cache miss, never per message.

    ``reason(cls)`` says in a few words why a message of class ``cls`` goes to the first
    route (the router puts it in the decision's ``reason``).
    """

    def rank(
        self,
        quotes: Iterable[Quote],
        carriers: Mapping[str, Carrier],
        cls: int,
        country: str,
        estimate: Estimate,
        bucket: BucketParams,
    ) -> tuple[Route, ...]: ...

    def reason(self, cls: int) -> str: ...


class Weights(NamedTuple):
    latency: float  # USD per second of expected latency
    failure: float  # USD per undelivered message


WEIGHTS: Final = (
    Weights(latency=0.0025, failure=0.05),  # otp: speed and reliability first
    Weights(latency=0.0005, failure=0.01),  # transactional: balanced
    Weights(latency=0.0, failure=0.0),  # marketing: expected cost per delivered message
)


def score(
    price: float,
    reliability: float,
    latency_s: float,
    cls: int,
    weights: tuple[Weights, ...] = WEIGHTS,
) -> float:
    """The default policy's score (lower is better); see the module docstring."""
    w = weights[cls]
    r = reliability if reliability > R_MIN else R_MIN
    return price / r + w.latency * latency_s + w.failure * (1.0 - reliability)


class ExpectedCost:
    """The default policy: rank by ``score`` (see the module docstring), ties on price,
    then carrier id. ``weights`` per class, indexed like ``CLASSES``."""

    __slots__ = ("weights",)

    def __init__(self, weights: tuple[Weights, ...] = WEIGHTS) -> None:
        if len(weights) != len(CLASSES):
            raise ValueError(f"need one Weights per class {CLASSES}, got {len(weights)}")
        self.weights = weights

    def rank(
        self,
        quotes: Iterable[Quote],
        carriers: Mapping[str, Carrier],
        cls: int,
        country: str,
        estimate: Estimate,
        bucket: BucketParams,
    ) -> tuple[Route, ...]:
        """Every quote as a Route, best first, for message class ``cls``."""
        new = tuple.__new__  # C-level construction: a NamedTuple's own __new__ is Python code
        weights = self.weights
        routes = []
        for carrier, price, prefix, _ in quotes:
            c = carriers[carrier]
            rate, latency = estimate(c, country)
            interval, tau = bucket(c)
            s = score(price, rate, latency, cls, weights)
            routes.append(
                new(Route, (carrier, price, interval, tau, s, rate, latency, prefix, c.kind))
            )
        routes.sort(key=_order)
        return tuple(routes)

    def reason(self, cls: int) -> str:
        extra = " plus latency and failure costs" if any(self.weights[cls]) else ""
        return (
            f"best {CLASSES[cls]} route: lowest score (expected cost per delivered message{extra})"
        )


EXPECTED_COST: Final = ExpectedCost()
"""The default policy with the default weights (stateless, so one instance serves all)."""


def _ordered(
    quotes: Iterable[Quote],
    carriers: Mapping[str, Carrier],
    country: str,
    estimate: Estimate,
    bucket: BucketParams,
    key: Callable[[Route], tuple[bool, float, str]],
) -> tuple[Route, ...]:
    """Every quote as a Route (score: its price), sorted by ``key``."""
    routes = []
    for carrier, price, prefix, _ in quotes:
        c = carriers[carrier]
        rate, latency = estimate(c, country)
        interval, tau = bucket(c)
        routes.append(Route(carrier, price, interval, tau, price, rate, latency, prefix, c.kind))
    routes.sort(key=key)
    return tuple(routes)


class CheapestFirst:
    """always-cheapest: the lowest price per segment, any kind; ties on carrier id.
    Ranks on price alone (a Route's score is its price); the estimates only fill each
    Route's reliability and latency."""

    def rank(
        self,
        quotes: Iterable[Quote],
        carriers: Mapping[str, Carrier],
        cls: int,
        country: str,
        estimate: Estimate,
        bucket: BucketParams,
    ) -> tuple[Route, ...]:
        return _ordered(quotes, carriers, country, estimate, bucket,
                        lambda r: (False, r.price, r.carrier))  # fmt: skip

    def reason(self, cls: int) -> str:
        return "always-cheapest: the lowest price per segment"


class DirectFirst:
    """always-direct: direct carriers before aggregators, each kind by price, then
    carrier id. Ranks on kind and price alone (a Route's score is its price); the
    estimates only fill each Route's reliability and latency."""

    def rank(
        self,
        quotes: Iterable[Quote],
        carriers: Mapping[str, Carrier],
        cls: int,
        country: str,
        estimate: Estimate,
        bucket: BucketParams,
    ) -> tuple[Route, ...]:
        return _ordered(quotes, carriers, country, estimate, bucket,
                        lambda r: (r.kind != "direct", r.price, r.carrier))  # fmt: skip

    def reason(self, cls: int) -> str:
        return "always-direct: the cheapest direct carrier"


def _order(r: Route) -> tuple[float, float, str]:
    return (r[4], r[1], r[0])  # score, price, carrier
