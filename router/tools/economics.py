"""The economics run: four routing policies on the same traffic and the same network.

Every policy sees identical requests in identical order (the load generator's seeded
traffic model, ``router.tools.load``) and a fresh set of simulated carriers built from the
same network directory, so each carrier's random stream starts from the same seed.
Carriers are the real ``carriers.endpoint.Endpoint``: a submit decides the result
(accepted, or rejected: throttled by the true cap, random failures) and, for an accepted
message, whether it reaches the handset and when its report is due (or that the report
is lost). No brokers: one virtual clock and one heap of timed events, so results and
delivery reports come back after their delays and feed health in time order.

Policies:

- ``supernet``: the routing core (``Router.decide``) with its health learning from the
  delivery reports, throttles, breakers, and the worker's failover on a reject
  (``router.engine.pipeline.Pipeline.failover``: the next affordable route that is neither
  broken nor at its cap, up to ``MAX_ATTEMPTS`` attempts). A message for which every
  affordable carrier is at its cap is held and retried every ``HOLD_RETRY_S`` as the
  worker does, until its validity period passes.
- ``oracle``: the same router, ranking formula, throttles and breakers, but its health
  reports every carrier's true delivery probability and mean latency towards each
  country (``simulation.json``) instead of learned averages.
- ``always-direct``: the cheapest direct carrier within ``max_price``; aggregators only
  when no direct carrier has a route. On a reject, the next one in that order.
- ``always-cheapest``: the lowest price per segment within ``max_price``, any kind; on a
  reject, the next cheapest.

The two baselines learn nothing: no health, no breakers and no throttles of their own;
a carrier past its cap rejects them (30001) and they fail over, up to ``MAX_ATTEMPTS``.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import phonenumbers

from carriers import deck, simulation
from carriers.endpoint import SUBMIT_LATENCY_SIGMA, Endpoint
from carriers.ledger import Ledger
from carriers.simulation import CarrierTruth
from router.contracts import network_file
from router.contracts.codes import Code
from router.contracts.interconnect import SubmitItem, SubmitResult
from router.core.decision import Router
from router.core.e164 import normalise
from router.core.health import Health, HealthConfig
from router.core.network import load_network
from router.core.policy import CLASS_INDEX, Route
from router.core.segments import count
from router.core.table import Carrier, Quote, RouteTable
from router.tools.load.mix import Mix
from router.tools.load.numbers import build_plan
from router.tools.load.traffic import Traffic

POLICIES: Final = ("supernet", "always-direct", "always-cheapest", "oracle")
MAX_ATTEMPTS: Final = 3  # the worker's default (router.engine.settings max_attempts)
HOLD_RETRY_S: Final = 0.01  # the worker looks at held requests this often (worker.TIMER_S)
MAX_HOLD_S: Final = 60.0  # a held request without a validity period gives up after this
WALL_BASE_MS: Final = 1_763_740_800_000  # wall clock at virtual time 0 (created_at, ts)


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


# -- the traffic ----------------------------------------------------------------------


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
    """(code, segments, encoding, country, affordable quotes): the stateless part of
    ``Router.decide``, whose refusals (bad number, bad body, no route, none within
    max_price) do not depend on health or throttles."""
    sg = count(body)
    if sg.code:
        return sg.code, 0, sg.encoding, "", ()
    digits = normalise(to)
    e = table.lookup(digits) if digits is not None else None
    if digits is None or e is None or len(digits) not in e.lengths:
        return Code.INVALID_DESTINATION, sg.segments, sg.encoding, "", ()
    if not e.quotes:
        return Code.NO_ROUTE, sg.segments, sg.encoding, e.country, ()
    quotes = tuple(q for q in e.quotes if max_price is None or q.price * sg.segments <= max_price)
    if not quotes:
        return Code.NO_ROUTE_WITHIN_PRICE, sg.segments, sg.encoding, e.country, ()
    return 0, sg.segments, sg.encoding, e.country, quotes


# -- the simulated network ------------------------------------------------------------


class Network:
    """A network directory loaded once: the route table, and what builds fresh carriers."""

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

    def reset(self) -> None:
        """Drop every cached ranking in the shared table (as ``Router.tick`` does for a
        country), so that a new router's health epoch 0 cannot meet a stale cache."""
        for e in self.table.entries.values():
            e.epoch = -1
        for e in self.table.by_key.values():
            e.epoch = -1

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


class TruthHealth(Health):
    """Health that knows the simulator's truth: ``estimate`` returns every carrier's
    true delivery probability and latency. Breakers work as in ``Health``."""

    __slots__ = ("_truth",)

    def __init__(
        self, truth: Callable[[str, str], tuple[float, float]], config: HealthConfig | None = None
    ) -> None:
        super().__init__(config)
        self._truth = truth

    def estimate(self, carrier: Carrier, country: str) -> tuple[float, float]:
        return self._truth(carrier.id, country)


# -- policies -------------------------------------------------------------------------


class Flight:
    """A message in flight under one policy."""

    __slots__ = ("attempt", "carrier", "held", "index", "job", "price", "routes", "submitted_at")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.attempt = 0
        self.index = -1  # the current route in ``routes``
        self.routes: Sequence[Route] | Sequence[Quote] = ()
        self.carrier = ""
        self.price = 0.0  # quoted price per segment of the current attempt
        self.submitted_at = 0.0
        self.held = False


HOLD: Final = -1  # Policy.start: every affordable carrier is at its cap; retry later
EXHAUSTED: Final = -2  # Policy.failover: no attempt left; the last reject is the outcome


class Policy:
    """How one policy chooses, fails over and learns. ``start`` and ``failover`` set
    the flight's carrier and return 0, or return a failure code (or ``HOLD``)."""

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


class RouterPolicy(Policy):
    """supernet (learned health) or the oracle (true health): the real routing core."""

    def __init__(self, name: str, table: RouteTable, health: Health) -> None:
        self.name = name
        self.router = Router(table, health)
        self.carriers = table.carriers

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
        routes = cast("Sequence[Route]", f.routes)  # supernet's flights hold Routes
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


class StaticPolicy(Policy):
    """A fixed order of the affordable quotes; no learning, no throttles, no breakers."""

    def __init__(self, name: str, order: Callable[[Iterable[Quote]], list[Quote]]) -> None:
        self.name = name
        self.order = order

    def start(self, f: Flight, now: float) -> int:
        routes = self.order(f.job.quotes)
        f.routes, f.index, f.carrier, f.price = routes, 0, routes[0].carrier, routes[0].price
        return 0

    def failover(self, f: Flight, now: float) -> int:
        i = f.index + 1
        if f.attempt >= MAX_ATTEMPTS or i >= len(f.routes):
            return EXHAUSTED
        q = f.routes[i]
        f.index, f.carrier, f.price = i, q.carrier, q.price
        return 0


def direct_first(carriers: dict[str, Carrier]) -> Callable[[Iterable[Quote]], list[Quote]]:
    def order(quotes: Iterable[Quote]) -> list[Quote]:
        return sorted(
            quotes, key=lambda q: (carriers[q.carrier].kind != "direct", q.price, q.carrier)
        )

    return order


def cheapest_first(quotes: Iterable[Quote]) -> list[Quote]:
    return sorted(quotes, key=lambda q: (q.price, q.carrier))


def make_policy(name: str, net: Network) -> Policy:
    carriers = net.table.carriers
    if name == "supernet":
        return RouterPolicy(name, net.table, Health())
    if name == "oracle":
        return RouterPolicy(name, net.table, TruthHealth(net.truth))
    if name == "always-direct":
        return StaticPolicy(name, direct_first(carriers))
    if name == "always-cheapest":
        return StaticPolicy(name, cheapest_first)
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


def simulate(
    policy: Policy, jobs: Sequence[Job], net: Network, observer: Observer | None = None
) -> PolicyResult:
    """Run ``jobs`` through ``policy`` on fresh endpoints, on a virtual clock, until the
    last delivery report is in."""
    endpoints, ledger = net.endpoints()
    aggregators = {cid for cid, c in net.table.carriers.items() if c.kind == "aggregator"}
    watch = observer or Observer()
    heap: list[_Event] = []
    push = heapq.heappush
    seq = 0
    held: deque[Flight] = deque()
    retry_at = math.inf
    sent = delivered = on_aggregators = reported = reported_delivered = 0
    failed = throttled = held_count = submits = flights = failovers = 0
    cost = 0.0

    def submit(f: Flight, now: float) -> None:
        nonlocal seq, submits, flights, failovers
        f.attempt += 1
        submits += 1
        if f.attempt == 1:
            flights += 1
        else:
            failovers += 1
        j = f.job
        ep = endpoints[f.carrier]
        wall = WALL_BASE_MS + round(now * 1000)
        item = SubmitItem(
            id=j.id, to=j.to, carrier=f.carrier, account=j.account, segments=j.segments,
            price=f.price, attempt=f.attempt, encoding=j.encoding, country=j.country, ts=wall,
        )  # fmt: skip
        before = ep.ledger.delivered
        out = ep.submit(item, now, wall)
        if out is None:  # offline: no scenario here takes a carrier down
            raise RuntimeError(f"carrier {f.carrier} is offline in a run without faults")
        watch.submitted(j, f.carrier, f.attempt, now)
        seq += 1
        push(heap, (out.result_at, seq, _RESULT, f, out.result, ep.ledger.delivered > before, 0.0))
        rep = out.report
        if rep is not None:
            seq += 1
            ok = rep.status == "delivered"
            push(heap, (out.report_at, seq, _REPORT, f, None, ok, out.report_at - now))

    def begin(f: Flight, now: float) -> None:
        nonlocal failed, held_count, retry_at
        code = policy.start(f, now)
        if code == 0:
            submit(f, now)
        elif code == HOLD:
            if not f.held:
                f.held = True
                held_count += 1
            held.append(f)
            retry_at = min(retry_at, now + HOLD_RETRY_S)
        else:
            failed += 1

    i, n = 0, len(jobs)
    while True:
        arrival = jobs[i].at if i < n else math.inf
        due = heap[0][0] if heap else math.inf
        if retry_at <= due and retry_at <= arrival and retry_at < math.inf:
            now, retry_at = retry_at, math.inf
            for _ in range(len(held)):
                f = held.popleft()
                if now > f.job.deadline:
                    failed += 1  # expired while held (the worker's 30036)
                else:
                    begin(f, now)
        elif due <= arrival and due < math.inf:
            now, _, kind, f, result, ok, latency = heapq.heappop(heap)
            if kind == _REPORT:
                reported += 1
                reported_delivered += ok
                policy.report(f.carrier, f.job.country, ok, latency, now)
                continue
            assert result is not None
            if result.accepted:
                policy.accepted(f.carrier)
                sent += 1
                bill = result.price * f.job.segments
                cost += bill
                delivered += ok
                on_aggregators += f.carrier in aggregators
                watch.sent(f.job, f.carrier, bill, ok)
            else:
                code = result.code or 0
                throttled += code == Code.QUEUE_OVERFLOW
                policy.rejected(f.carrier, code, now)
                if policy.failover(f, now) == 0:
                    submit(f, now)
                else:
                    failed += 1
        elif i < n:
            j = jobs[i]
            i += 1
            if j.code == 0:
                begin(Flight(j), j.at)
        else:
            break

    truth = sum(c.delivered for c in ledger.carriers.values())
    if truth != delivered:
        raise AssertionError(f"{policy.name}: {delivered} delivered counted, ledger {truth}")
    routed = sum(1 for j in jobs if j.code == 0)
    return PolicyResult(
        name=policy.name,
        requests=len(jobs),
        routed=routed,
        sent=sent,
        delivered=delivered,
        delivery_rate=delivered / routed if routed else 0.0,
        cost_usd=cost,
        cost_per_delivered_usd=cost / delivered if delivered else math.inf,
        mean_attempts=submits / flights if flights else 0.0,
        failovers=failovers,
        aggregator_share=on_aggregators / sent if sent else 0.0,
        reported=reported,
        reported_delivered=reported_delivered,
        reported_delivery_rate=reported_delivered / reported if reported else 0.0,
        failed=failed,
        throttled=throttled,
        held=held_count,
        spilled=policy.spilled,
    )


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
    results = []
    for name in policies:
        net.reset()
        results.append(simulate(make_policy(name, net), jobs, net))
    return results
