"""The economics run: four routing policies on the same traffic and the same network.

Every policy sees identical requests in identical order (the load generator's seeded
traffic model, ``router.tools.load``) and a fresh set of simulated carriers built from the
same network directory, so each carrier's random stream starts from the same seed
(``router.tools.economics_world``). Carriers are the real ``carriers.endpoint.Endpoint``:
a submit decides the result (accepted, or rejected: throttled by the true cap, random
failures) and, for an accepted message, whether it reaches the handset and when its
report is due (or that the report is lost). No brokers: one virtual clock and one heap of
timed events, so results and delivery reports come back after their delays and feed
health in time order.

Every policy is a ``router.core.policy.Policy`` (the protocol the router ranks with), and
a *contender* drives it:

- ``supernet``: the routing core (``Router.decide``) with the default policy and its
  health learning from the delivery reports, throttles, breakers, and the worker's
  failover on a reject (``Router.next_route``: the next affordable route that is neither
  broken nor at its cap, up to ``MAX_ATTEMPTS`` attempts). A message for which every
  affordable carrier is at its cap is held and retried every ``HOLD_RETRY_S`` as the
  worker does, until its validity period passes.
- ``oracle``: the same router, throttles and breakers with the ``Oracle`` policy: the
  default formula fed every carrier's true delivery probability and mean latency towards
  each country (``simulation.json``) instead of learned averages.
- ``always-direct`` (``DirectFirst``): the cheapest direct carrier within ``max_price``;
  aggregators only when no direct carrier has a route. On a reject, the next one in that
  order.
- ``always-cheapest`` (``CheapestFirst``): the lowest price per segment within
  ``max_price``, any kind; on a reject, the next cheapest.

The two baselines are driven statically (``StaticContender``): no health, no breakers
and no throttles of their own; a carrier past its cap rejects them (30001) and they fail
over, up to ``MAX_ATTEMPTS``. To add a policy: write a ``Policy``, give it a name in
``POLICIES`` and build its contender in ``make_contender``.

Figures per policy (``PolicyResult``): requests, requests with a route (a valid
destination and body, and a carrier within ``max_price``; the same for every policy),
accepted (sent), delivered by ground truth (the endpoint decides at submit time; lost
reports do not hide a delivery), the delivery rate seen in the reports that did arrive,
cost (billed price per segment x segments of each accepted message), cost per delivered
message, attempts and failovers, and the share of sent messages on aggregators.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from router.contracts.codes import Code
from router.contracts.interconnect import SubmitItem, SubmitResult
from router.core.decision import Router
from router.core.health import Health
from router.core.policy import EXPECTED_COST, CheapestFirst, DirectFirst, ExpectedCost, Policy
from router.core.throttle import bucket_params
from router.core.types import BucketParams, Carrier, Estimate, Quote, Route
from router.tools.economics_world import (
    WALL_BASE_MS,
    Job,
    Network,
    check,
    prepare,
    true_estimate,
)

__all__ = [
    "HOLD_RETRY_S",
    "MAX_ATTEMPTS",
    "POLICIES",
    "CheapestFirst",
    "Contender",
    "DirectFirst",
    "Job",
    "Network",
    "Observer",
    "Oracle",
    "PolicyResult",
    "RouterContender",
    "StaticContender",
    "advertised",
    "check",
    "compare",
    "make_contender",
    "prepare",
    "simulate",
    "true_estimate",
]

POLICIES: Final = ("supernet", "always-direct", "always-cheapest", "oracle")
MAX_ATTEMPTS: Final = 3  # the worker's default (router.engine.settings max_attempts)
HOLD_RETRY_S: Final = 0.01  # the worker looks at held requests this often (worker.TIMER_S)


@dataclass(frozen=True)
class PolicyResult:
    name: str
    requests: int
    routed: int  # requests with a route: valid, and a carrier within max_price
    sent: int  # accepted by a carrier
    delivered: int  # reached the handset (ground truth)
    delivery_rate: float  # delivered / routed
    cost_usd: float  # billed price per segment x segments, over accepted messages
    cost_per_delivered_usd: float
    mean_attempts: float  # submits per routed request that was submitted at least once
    failovers: int  # submits after a rejected attempt (to another carrier)
    aggregator_share: float  # share of sent messages on aggregators
    reported: int = 0  # delivery reports received (some are lost on purpose)
    reported_delivered: int = 0
    reported_delivery_rate: float = 0.0  # delivered / reports received
    failed: int = 0  # routed but never accepted (rejects exhausted, expired, no carrier)
    throttled: int = 0  # rejects for a carrier's throughput cap (30001)
    held: int = 0  # requests that waited for a carrier under its cap (supernet, oracle)
    spilled: int = 0  # decisions that passed over a better route at its cap (its throttle)


# -- the oracle: a router.core.policy.Policy that knows the simulator's truth ----------


class Oracle:
    """The default formula fed the simulator's truth (``truth(carrier id, country)`` ->
    (delivery probability, mean latency s)) instead of health's estimates."""

    __slots__ = ("_formula", "_truth")

    def __init__(
        self,
        truth: Callable[[str, str], tuple[float, float]],
        formula: ExpectedCost = EXPECTED_COST,
    ) -> None:
        self._truth = truth
        self._formula = formula

    def _estimate(self, carrier: Carrier, country: str) -> tuple[float, float]:
        return self._truth(carrier.id, country)

    def rank(
        self,
        quotes: Iterable[Quote],
        carriers: Mapping[str, Carrier],
        cls: int,
        country: str,
        estimate: Estimate,
        bucket: BucketParams,
    ) -> tuple[Route, ...]:
        return self._formula.rank(quotes, carriers, cls, country, self._estimate, bucket)

    def reason(self, cls: int) -> str:
        return "oracle: " + self._formula.reason(cls)


def advertised(carrier: Carrier, country: str) -> tuple[float, float]:
    """The carrier's advertised figures: the estimates of a contender that learns nothing."""
    return carrier.delivery_rate, carrier.latency_s


# -- the contenders: how each policy is driven -------------------------------------------


class Flight:
    """A message in flight under one contender."""

    __slots__ = ("attempt", "carrier", "held", "index", "job", "price", "routes", "submitted_at")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.attempt = 0
        self.index = -1  # the current route in ``routes``
        self.routes: Sequence[Route] = ()
        self.carrier = ""
        self.price = 0.0  # quoted price per segment of the current attempt
        self.submitted_at = 0.0
        self.held = False


HOLD: Final = -1  # Contender.start: every affordable carrier is at its cap; retry later
EXHAUSTED: Final = -2  # Contender.failover: no attempt left; the last reject is the outcome


class Contender:
    """How one policy chooses, fails over and learns in the run. ``start`` and
    ``failover`` set the flight's carrier and return 0, or return a failure code (or
    ``HOLD``)."""

    name = ""
    spilled = 0  # decisions that passed over a better affordable route at its cap

    def start(self, f: Flight, now: float) -> int:
        raise NotImplementedError

    def failover(self, f: Flight, now: float) -> int:
        raise NotImplementedError

    def accepted(self, carrier: str) -> None:
        """A submit was accepted."""

    def rejected(self, carrier: str, code: int, now: float) -> None:
        """A submit was rejected with ``code``."""

    def report(
        self, carrier: str, country: str, delivered: bool, latency_s: float, now: float
    ) -> None:
        """A delivery report arrived."""


class RouterContender(Contender):
    """The real routing core with its policy (supernet: the default; the oracle's),
    health, throttles and breakers."""

    def __init__(self, name: str, router: Router) -> None:
        self.name = name
        self.router = router
        self.carriers = router.table.carriers

    def start(self, f: Flight, now: float) -> int:
        j = f.job
        d = self.router.decide(j.to, j.body, j.cls, j.max_price, now)
        if d.code == Code.QUEUE_OVERFLOW:
            return HOLD
        if d.code:
            return d.code
        if d.chosen:
            cap = math.inf if j.max_price is None else j.max_price
            self.spilled += any(r.price * j.segments <= cap for r in d.routes[: d.chosen])
        route = d.routes[d.chosen]
        f.routes, f.index, f.carrier, f.price = d.routes, d.chosen, route.carrier, route.price
        return 0

    def failover(self, f: Flight, now: float) -> int:
        """``Pipeline.failover``: the next affordable route, not broken, under its cap."""
        if f.attempt >= MAX_ATTEMPTS:
            return EXHAUSTED
        routes = f.routes
        i = self.router.next_route(routes, f.index, f.job.segments, f.job.max_price, now)
        if i < 0:
            return EXHAUSTED
        r = routes[i]
        f.index, f.carrier, f.price = i, r.carrier, r.price
        return 0

    def accepted(self, carrier: str) -> None:
        self.router.health.submit_ok(carrier)

    def rejected(self, carrier: str, code: int, now: float) -> None:
        self.router.health.submit_failed(carrier, now, str(code))

    def report(
        self, carrier: str, country: str, delivered: bool, latency_s: float, now: float
    ) -> None:
        self.router.health.delivery(self.carriers[carrier], country, delivered, latency_s, now)


class StaticContender(Contender):
    """The policy's order of the affordable quotes, ranked on the advertised figures;
    no learning, no throttles, no breakers."""

    def __init__(self, name: str, policy: Policy, carriers: Mapping[str, Carrier]) -> None:
        self.name = name
        self.policy = policy
        self.carriers = carriers
        # a Policy is pure (see its protocol): the same quotes, class and country rank alike
        self._ranked: dict[tuple[tuple[Quote, ...], int, str], tuple[Route, ...]] = {}

    def start(self, f: Flight, now: float) -> int:
        j = f.job
        key = (j.quotes, j.cls, j.country)
        routes = self._ranked.get(key)
        if routes is None:
            routes = self._ranked[key] = self.policy.rank(
                j.quotes, self.carriers, j.cls, j.country, advertised, bucket_params
            )
        f.routes, f.index, f.carrier, f.price = routes, 0, routes[0].carrier, routes[0].price
        return 0

    def failover(self, f: Flight, now: float) -> int:
        i = f.index + 1
        if f.attempt >= MAX_ATTEMPTS or i >= len(f.routes):
            return EXHAUSTED
        r = f.routes[i]
        f.index, f.carrier, f.price = i, r.carrier, r.price
        return 0


def make_contender(name: str, net: Network) -> Contender:
    """The contender for the policy called ``name`` (one of ``POLICIES``) on ``net``."""
    carriers = net.table.carriers
    if name == "supernet":
        return RouterContender(name, Router(net.table, Health()))
    if name == "oracle":
        return RouterContender(name, Router(net.table, Health(), policy=Oracle(net.truth)))
    if name == "always-direct":
        return StaticContender(name, DirectFirst(), carriers)
    if name == "always-cheapest":
        return StaticContender(name, CheapestFirst(), carriers)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


# -- the run --------------------------------------------------------------------------


class Observer:
    """Sees every submit and every accepted message (tests check choices and bills)."""

    def submitted(self, job: Job, carrier: str, attempt: int, now: float) -> None:
        """``job`` went to ``carrier`` (attempt 1, 2, ...)."""

    def sent(self, job: Job, carrier: str, cost_usd: float, delivered: bool) -> None:
        """``carrier`` accepted ``job`` and bills ``cost_usd``; ``delivered`` is the truth."""


_RESULT: Final = 0
_REPORT: Final = 1
# (due, sequence, kind, flight, result (for _RESULT), delivered, latency (for _REPORT))
_Event = tuple[float, int, int, Flight, SubmitResult | None, bool, float]


class _Run:
    """One contender over the jobs: the event heap, the held messages and the counts."""

    def __init__(self, contender: Contender, net: Network, observer: Observer) -> None:
        self.contender = contender
        self.endpoints, self.ledger = net.endpoints()
        self.aggregators = {cid for cid, c in net.table.carriers.items() if c.kind == "aggregator"}
        self.watch = observer
        self.heap: list[_Event] = []
        self.seq = 0
        self.held: deque[Flight] = deque()
        self.retry_at = math.inf
        self.sent = self.delivered = self.on_aggregators = 0
        self.reported = self.reported_delivered = 0
        self.failed = self.throttled = self.held_count = 0
        self.submits = self.flights = self.failovers = 0
        self.cost = 0.0

    def submit(self, f: Flight, now: float) -> None:
        f.attempt += 1
        self.submits += 1
        if f.attempt == 1:
            self.flights += 1
        else:
            self.failovers += 1
        j = f.job
        ep = self.endpoints[f.carrier]
        wall = WALL_BASE_MS + round(now * 1000)
        item = SubmitItem(
            id=j.id, to=j.to, carrier=f.carrier, account=j.account, segments=j.segments,
            price=f.price, attempt=f.attempt, encoding=j.encoding, country=j.country, ts=wall,
        )  # fmt: skip
        before = ep.ledger.delivered
        out = ep.submit(item, now, wall)
        if out is None:  # offline: no scenario here takes a carrier down
            raise RuntimeError(f"carrier {f.carrier} is offline in a run without faults")
        self.watch.submitted(j, f.carrier, f.attempt, now)
        ok = ep.ledger.delivered > before
        self.push((out.result_at, 0, _RESULT, f, out.result, ok, 0.0))
        rep = out.report
        if rep is not None:
            ok = rep.status == "delivered"
            self.push((out.report_at, 0, _REPORT, f, None, ok, out.report_at - now))

    def push(self, event: _Event) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (event[0], self.seq, *event[2:]))

    def begin(self, f: Flight, now: float) -> None:
        code = self.contender.start(f, now)
        if code == 0:
            self.submit(f, now)
        elif code == HOLD:
            if not f.held:
                f.held = True
                self.held_count += 1
            self.held.append(f)
            self.retry_at = min(self.retry_at, now + HOLD_RETRY_S)
        else:
            self.failed += 1

    def retry_held(self, now: float) -> None:
        self.retry_at = math.inf
        for _ in range(len(self.held)):
            f = self.held.popleft()
            if now > f.job.deadline:
                self.failed += 1  # expired while held (the worker's 30036)
            else:
                self.begin(f, now)

    def next_event(self) -> None:
        now, _, kind, f, result, ok, latency = heapq.heappop(self.heap)
        c = self.contender
        if kind == _REPORT:
            self.reported += 1
            self.reported_delivered += ok
            c.report(f.carrier, f.job.country, ok, latency, now)
            return
        assert result is not None
        if result.accepted:
            c.accepted(f.carrier)
            self.sent += 1
            bill = result.price * f.job.segments
            self.cost += bill
            self.delivered += ok
            self.on_aggregators += f.carrier in self.aggregators
            self.watch.sent(f.job, f.carrier, bill, ok)
        else:
            code = result.code or 0
            self.throttled += code == Code.QUEUE_OVERFLOW
            c.rejected(f.carrier, code, now)
            if c.failover(f, now) == 0:
                self.submit(f, now)
            else:
                self.failed += 1

    def run(self, jobs: Sequence[Job]) -> None:
        """Arrivals, held retries and timed events in time order (held retries first,
        then events, then arrivals at equal times) until nothing is left."""
        i, n = 0, len(jobs)
        while True:
            arrival = jobs[i].at if i < n else math.inf
            due = self.heap[0][0] if self.heap else math.inf
            retry_at = self.retry_at
            if retry_at <= due and retry_at <= arrival and retry_at < math.inf:
                self.retry_held(retry_at)
            elif due <= arrival and due < math.inf:
                self.next_event()
            elif i < n:
                j = jobs[i]
                i += 1
                if j.code == 0:
                    self.begin(Flight(j), j.at)
            else:
                break

    def result(self, jobs: Sequence[Job]) -> PolicyResult:
        name = self.contender.name
        truth = sum(c.delivered for c in self.ledger.carriers.values())
        if truth != self.delivered:
            raise AssertionError(f"{name}: {self.delivered} delivered counted, ledger {truth}")
        routed = sum(1 for j in jobs if j.code == 0)
        sent, delivered, cost, reported = self.sent, self.delivered, self.cost, self.reported
        return PolicyResult(
            name=name,
            requests=len(jobs),
            routed=routed,
            sent=sent,
            delivered=delivered,
            delivery_rate=delivered / routed if routed else 0.0,
            cost_usd=cost,
            cost_per_delivered_usd=cost / delivered if delivered else math.inf,
            mean_attempts=self.submits / self.flights if self.flights else 0.0,
            failovers=self.failovers,
            aggregator_share=self.on_aggregators / sent if sent else 0.0,
            reported=reported,
            reported_delivered=self.reported_delivered,
            reported_delivery_rate=self.reported_delivered / reported if reported else 0.0,
            failed=self.failed,
            throttled=self.throttled,
            held=self.held_count,
            spilled=self.contender.spilled,
        )


def simulate(
    contender: Contender, jobs: Sequence[Job], net: Network, observer: Observer | None = None
) -> PolicyResult:
    """Run ``jobs`` through ``contender`` on fresh endpoints, on a virtual clock, until
    the last delivery report is in."""
    run = _Run(contender, net, observer or Observer())
    run.run(jobs)
    return run.result(jobs)


def compare(
    network: Path,
    count: int,
    seed: int = 1,
    rate: float = 2000.0,
    policies: Sequence[str] = POLICIES,
) -> list[PolicyResult]:
    """Every policy in ``policies`` on the same ``count`` requests (traffic ``seed``,
    offered at ``rate`` per second of virtual time) over the network in ``network``."""
    for name in policies:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    net = Network(network)
    jobs = prepare(net.table, count, seed, rate, network)
    return [simulate(make_contender(name, net), jobs, net) for name in policies]
