"""The economics run on a small network: each policy obeys its rule, every policy gets
the same traffic, the figures add up, and the same seed gives the same figures."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carriers import simulation
from carriers.generator import generate, write
from carriers.network import reduce_network
from router.contracts.codes import Code
from router.core.decision import Router
from router.core.policy import DirectFirst
from router.core.throttle import bucket_params
from router.core.types import Quote
from router.tools import economics
from router.tools.economics import (
    MAX_ATTEMPTS,
    POLICIES,
    Job,
    Network,
    Observer,
    PolicyResult,
    advertised,
)

REGIONS = {"GB", "NG", "KE", "PE"}
COUNT = 3_000
RATE = 2_000.0


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    full = tmp_path_factory.mktemp("full")
    write(generate(1), full)
    return reduce_network(full, tmp_path_factory.mktemp("small"), REGIONS)


@pytest.fixture(scope="module")
def net(small: Path) -> Network:
    return Network(small)


@pytest.fixture(scope="module")
def jobs(net: Network, small: Path) -> list[Job]:
    return economics.prepare(net.table, COUNT, 5, RATE, small)


class Recorder(Observer):
    def __init__(self) -> None:
        self.attempts: dict[str, list[str]] = defaultdict(list)  # job id -> carriers
        self.first: list[Job] = []
        self.bills: list[float] = []
        self.delivered = 0

    def submitted(self, job: Job, carrier: str, attempt: int, now: float) -> None:
        assert attempt == len(self.attempts[job.id]) + 1
        self.attempts[job.id].append(carrier)
        if attempt == 1:
            self.first.append(job)

    def sent(self, job: Job, carrier: str, cost_usd: float, delivered: bool) -> None:
        self.bills.append(cost_usd)
        self.delivered += delivered


def run(name: str, net: Network, jobs: list[Job]) -> tuple[PolicyResult, Recorder]:
    rec = Recorder()
    return economics.simulate(economics.make_contender(name, net), jobs, net, rec), rec


@pytest.fixture(scope="module")
def runs(net: Network, jobs: list[Job]) -> dict[str, tuple[PolicyResult, Recorder]]:
    return {name: run(name, net, jobs) for name in POLICIES}


def price_of(job: Job, carrier: str) -> float:
    return next(q.price for q in job.quotes if q.carrier == carrier)


def test_the_traffic_is_realistic_and_mostly_routable(jobs: list[Job]) -> None:
    routable = [j for j in jobs if j.code == 0]
    assert len(routable) > 0.8 * len(jobs)
    assert {j.country for j in routable} >= REGIONS  # and IM, JE, GG: they share +44
    assert {j.cls for j in routable} == {0, 1, 2}
    assert any(j.code == Code.NO_ROUTE_WITHIN_PRICE for j in jobs)  # caps too low
    assert any(j.code == Code.INVALID_DESTINATION for j in jobs)
    assert [j.at for j in jobs] == [i / RATE for i in range(COUNT)]


def test_check_agrees_with_the_router(net: Network, jobs: list[Job]) -> None:
    router = Router(net.table)
    for i, j in enumerate(jobs):
        d = router.decide(j.to, j.body, j.cls, j.max_price, now=float(i))  # no cap binds
        assert d.code == j.code, j
        if d.code == 0:
            assert d.segments == j.segments
            assert d.country == j.country
            cap = math.inf if j.max_price is None else j.max_price
            affordable = {r.carrier for r in d.routes if r.price * j.segments <= cap}
            assert affordable == {q.carrier for q in j.quotes}


def test_check_refuses_a_short_number_with_an_empty_body_as_the_router_does(
    net: Network,
) -> None:
    assert economics.check(net.table, "+12", "", None)[0] == Code.INVALID_DESTINATION
    assert Router(net.table).decide("+12", "", 0).code == Code.INVALID_DESTINATION


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    to=st.one_of(
        st.text(max_size=20),
        st.from_regex(r"\+(44|234|254|51|1)[0-9 ()-]{0,14}", fullmatch=True),
        st.text(alphabet="0123456789", max_size=16).map(lambda d: "+" + d),
    ),
    body=st.one_of(st.text(max_size=200), st.sampled_from(["", "a" * 1601, "ж" * 700])),
    cap=st.one_of(st.none(), st.integers(0, 1000).map(lambda n: n / 10_000)),
)
def test_check_and_the_router_agree_on_any_input(
    net: Network, to: str, body: str, cap: float | None
) -> None:
    code, segments, encoding, country, quotes = economics.check(net.table, to, body, cap)
    d = Router(net.table).decide(to, body, 1, cap, now=0.0)  # fresh buckets: no cap binds
    assert (d.code, d.segments, d.encoding) == (code, segments, encoding)
    if code == 0:
        assert d.country == country
        limit = math.inf if cap is None else cap
        affordable = [r.carrier for r in d.routes if r.price * segments <= limit]
        assert sorted(affordable) == sorted(q.carrier for q in quotes)


def test_the_same_traffic_reaches_every_policy(
    runs: dict[str, tuple[PolicyResult, Recorder]], jobs: list[Job]
) -> None:
    routable = [j for j in jobs if j.code == 0]
    for name, (result, rec) in runs.items():
        assert result.requests == len(jobs), name
        assert result.routed == len(routable), name
        submitted = {j.id for j in rec.first}
        assert submitted <= {j.id for j in routable}, name
        assert len(submitted) >= result.routed - result.failed, name
    # the baselines never hold a message: they submit in arrival order, every one
    for name in ("always-direct", "always-cheapest"):
        assert runs[name][1].first == routable


def test_always_direct_picks_the_cheapest_direct(
    runs: dict[str, tuple[PolicyResult, Recorder]], net: Network, jobs: list[Job]
) -> None:
    kinds = {cid: c.kind for cid, c in net.table.carriers.items()}
    by_id = {j.id: j for j in jobs}
    seen_direct = 0
    for job_id, carriers in runs["always-direct"][1].attempts.items():
        j = by_id[job_id]
        directs = [q.price for q in j.quotes if kinds[q.carrier] == "direct"]
        first = carriers[0]
        if directs:
            assert kinds[first] == "direct"
            assert price_of(j, first) == min(directs)
            seen_direct += 1
        else:
            assert price_of(j, first) == min(q.price for q in j.quotes)
    assert seen_direct > 0


def test_direct_first_falls_back_to_aggregators_only_without_a_direct(net: Network) -> None:
    kinds = {cid: c.kind for cid, c in net.table.carriers.items()}
    direct = next(c for c, k in kinds.items() if k == "direct")
    aggs = sorted(c for c, k in kinds.items() if k == "aggregator")[:2]
    quotes = [Quote(aggs[0], 0.01, "44", "GB"), Quote(direct, 0.05, "447", "GB"),
              Quote(aggs[1], 0.02, "44", "GB")]  # fmt: skip

    def order(qs: list[Quote]) -> list[str]:
        routes = DirectFirst().rank(qs, net.table.carriers, 0, "GB", advertised, bucket_params)
        return [r.carrier for r in routes]

    assert order(quotes) == [direct, aggs[0], aggs[1]]
    assert order(quotes[::2]) == [aggs[0], aggs[1]]


def test_always_cheapest_picks_the_lowest_price(
    runs: dict[str, tuple[PolicyResult, Recorder]], jobs: list[Job]
) -> None:
    by_id = {j.id: j for j in jobs}
    for job_id, carriers in runs["always-cheapest"][1].attempts.items():
        j = by_id[job_id]
        prices = [price_of(j, c) for c in carriers]
        assert prices[0] == min(q.price for q in j.quotes)
        assert prices == sorted(prices)  # fails over to the next cheapest


def test_the_oracle_ranks_by_the_true_probabilities(net: Network, jobs: list[Job]) -> None:
    truths = {t.id: t for t in simulation.load(net.directory).carriers}
    oracle = economics.make_contender("oracle", net)
    learner = economics.make_contender("supernet", net)
    assert isinstance(oracle, economics.RouterContender)
    assert isinstance(learner, economics.RouterContender)
    differs = 0
    for i, j in enumerate(j for j in jobs if j.code == 0):
        d = oracle.router.decide(j.to, j.body, j.cls, j.max_price, now=float(i))
        assert d.code == 0
        cc = str(phonenumbers.country_code_for_region(j.country))
        for r in d.routes:
            t = truths[r.carrier]
            dest = t.destinations.get(cc)
            p = dest.delivery_probability if dest is not None else t.delivery_probability
            assert r.reliability == p
            assert r.latency_s > t.report_delay_ms / 1000 * (dest.latency_factor if dest else 1)
        differs += any(  # the learner starts from the advertised figures
            learner.router.health.estimate(net.table.carriers[r.carrier], j.country)[0]
            != r.reliability
            for r in d.routes
        )
    assert differs > 0


def test_true_latency_is_the_mean_of_the_endpoints_delays(net: Network) -> None:
    t = next(t for t in net.truths.values() if t.destinations)
    cc, dest = next(iter(t.destinations.items()))
    region = phonenumbers.region_code_for_country_code(int(cc))
    p, latency = economics.true_estimate(t, region)
    assert p == dest.delivery_probability
    expected = (
        t.submit_latency_ms * math.exp(0.3**2 / 2)
        + t.report_delay_ms * dest.latency_factor * math.exp(t.report_delay_sigma**2 / 2)
    ) / 1000
    assert latency == pytest.approx(expected)


def test_figures_are_consistent(runs: dict[str, tuple[PolicyResult, Recorder]]) -> None:
    for name, (r, rec) in runs.items():
        assert r.delivered <= r.sent <= r.routed <= r.requests, name
        assert r.sent + r.failed == r.routed, name
        assert r.reported_delivered <= r.reported <= r.sent, name
        assert r.cost_usd == pytest.approx(math.fsum(rec.bills)), name
        assert len(rec.bills) == r.sent
        assert rec.delivered == r.delivered
        assert r.delivery_rate == r.delivered / r.routed
        assert r.cost_per_delivered_usd == pytest.approx(r.cost_usd / r.delivered)
        submits = sum(len(c) for c in rec.attempts.values())
        assert r.mean_attempts == pytest.approx(submits / len(rec.attempts))
        assert r.failovers == submits - len(rec.attempts)
        assert 0.0 <= r.aggregator_share <= 1.0
        for carriers in rec.attempts.values():
            assert len(carriers) <= MAX_ATTEMPTS
            assert len(set(carriers)) == len(carriers)  # never the same carrier twice
        assert r.sent > 0.9 * r.routed, name
        assert r.spilled == 0 or name in ("supernet", "oracle")  # baselines have no buckets
    assert runs["always-cheapest"][0].aggregator_share > runs["always-direct"][0].aggregator_share


def test_same_seed_same_figures(small: Path) -> None:
    a = economics.compare(small, 1_000, seed=3, rate=RATE)
    b = economics.compare(small, 1_000, seed=3, rate=RATE)
    c = economics.compare(small, 1_000, seed=4, rate=RATE, policies=("supernet",))
    assert [r.name for r in a] == list(POLICIES)
    assert a == b
    assert c[0] != a[0]


def test_unknown_policy_is_refused(small: Path) -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        economics.compare(small, 10, policies=("cheapest",))
