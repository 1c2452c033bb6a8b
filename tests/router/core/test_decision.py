"""Router.decide against the oracle: ranking, max_price, breakers, throttle spill-over."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.contracts.codes import Code
from router.core.decision import Router
from router.core.health import Breaker, Health
from router.core.policy import EXPECTED_COST, CheapestFirst, DirectFirst
from router.core.table import RouteTable
from router.core.throttle import bucket_params
from router.core.types import CLASSES, MARKETING, OTP, Carrier
from tests.router.core import oracle
from tests.router.core.strategies import COUNTRIES, Network, networks, numbers

BODY = "Your code is 123456"


def router_for(net: Network) -> Router:
    carriers, decks = net
    return Router(RouteTable(carriers, decks, COUNTRIES, (1, 1, 1)))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), net=networks(), cls=st.sampled_from(range(len(CLASSES))))
def test_choice_and_fallbacks_follow_the_policy(
    data: st.DataObject, net: Network, cls: int
) -> None:
    carriers, decks = net
    router = router_for(net)
    for i in range(10):
        d = data.draw(numbers(decks))
        ranked = oracle.ranking(d, decks, carriers, cls)
        # far apart in time: every bucket is full again
        decision = router.decide("+" + d, BODY, cls, None, now=1000.0 * i)
        if not ranked:
            assert decision.code == Code.NO_ROUTE
            continue
        assert decision.code == 0
        assert (decision.carrier, decision.price) == ranked[0]
        assert [(r.carrier, r.price) for r in decision.fallbacks()] == ranked[1:]


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    net=networks(),
    cap=st.integers(0, 10_000).map(lambda n: n / 10_000),
    length=st.integers(1, 400),
)
def test_max_price_is_per_message_and_never_exceeded(
    data: st.DataObject, net: Network, cap: float, length: int
) -> None:
    carriers, decks = net
    router = router_for(net)
    body = "x" * length
    segments = 1 if length <= 160 else -(-length // 153)
    d = data.draw(numbers(decks))
    ranked = oracle.ranking(d, decks, carriers, MARKETING)
    decision = router.decide("+" + d, body, MARKETING, cap, now=0.0)
    affordable = [(c, p) for c, p in ranked if p * segments <= cap]
    assert decision.segments == (segments if ranked else decision.segments)
    if not ranked:
        assert decision.code == Code.NO_ROUTE
    elif not affordable:
        assert decision.code == Code.NO_ROUTE_WITHIN_PRICE
        assert decision.carrier is None
    else:
        assert decision.code == 0
        assert decision.carrier == affordable[0][0]
        assert decision.price == affordable[0][1] * segments <= cap
        assert [(r.carrier, r.price) for r in decision.fallbacks()] == affordable[1:]


class Buckets:
    """Oracle token bucket in its classic two-variable form."""

    def __init__(self, carriers: dict[str, Carrier]) -> None:
        self.carriers = carriers
        self.tokens: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def take(self, cid: str, now: float) -> bool:
        rate = self.carriers[cid].throughput_mps
        burst = max(1.0, rate * 1.0)
        tokens = min(burst, self.tokens.get(cid, burst) + (now - self.last.get(cid, now)) * rate)
        self.last[cid] = now
        if tokens >= 1.0 - 1e-9:
            self.tokens[cid] = tokens - 1.0
            return True
        self.tokens[cid] = tokens
        return False


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    net=networks(),
    gaps=st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.5, 1.0]), min_size=1, max_size=40),
)
def test_a_full_carrier_spills_over_to_the_next(
    data: st.DataObject, net: Network, gaps: list[float]
) -> None:
    carriers, decks = net
    router = router_for(net)
    buckets = Buckets(carriers)
    d = data.draw(numbers(decks))
    ranked = [c for c, _ in oracle.ranking(d, decks, carriers, OTP)]
    now = 0.0
    for gap in gaps:
        now += gap
        want = next((c for c in ranked if buckets.take(c, now)), None)
        decision = router.decide("+" + d, BODY, OTP, None, now)
        assert decision.carrier == want
        if ranked and want is None:
            assert decision.code == Code.QUEUE_OVERFLOW
        if want is not None and want != ranked[0]:
            assert "throughput cap" in decision.reason


@settings(max_examples=150, deadline=None)
@given(data=st.data(), net=networks(), broken=st.sets(st.sampled_from([f"c{i}" for i in range(6)])))
def test_open_breakers_are_skipped_and_probed_once_after_cooldown(
    data: st.DataObject, net: Network, broken: set[str]
) -> None:
    carriers, decks = net
    router = router_for(net)
    health = router.health
    for cid in broken:
        for _ in range(health.config.failure_threshold):
            health.submit_failed(cid, now=0.0)
    d = data.draw(numbers(decks))
    ranked = [c for c, _ in oracle.ranking(d, decks, carriers, OTP)]
    decision = router.decide("+" + d, BODY, OTP, None, now=1.0)
    healthy = [c for c in ranked if c not in broken]
    if healthy:
        assert decision.carrier == healthy[0]
    elif ranked:
        assert decision.code == Code.CARRIERS_UNAVAILABLE
    # After the cool-down each broken carrier is half-open: one probe, then it waits.
    later = 1.0 + health.config.cooldown_s + 2000.0
    first = router.decide("+" + d, BODY, OTP, None, now=later)
    if ranked:
        assert first.carrier == ranked[0]
        if ranked[0] in broken:
            assert health.breaker(ranked[0]) is Breaker.PROBING
            again = router.decide("+" + d, BODY, OTP, None, now=later + 1000.0)
            assert again.carrier != ranked[0]
            health.submit_ok(ranked[0])
            assert health.breaker(ranked[0]) is Breaker.CLOSED


def test_health_reaches_the_ranking_within_the_refresh_interval() -> None:
    carriers = {
        "good": Carrier("good", "g", "direct", 1.0, 0.99, 100.0),
        "cheap": Carrier("cheap", "c", "aggregator", 1.0, 0.99, 100.0),
    }
    decks = {"good": {"1": (0.010, "x")}, "cheap": {"1": (0.009, "x")}}
    router = Router(RouteTable(carriers, decks, COUNTRIES))
    assert router.decide("+15555555555", BODY, OTP, None, 0.0).carrier == "cheap"
    for _ in range(40):
        router.health.delivery(carriers["cheap"], "AA", False, None, now=0.1)
    # not yet published: the cached order stands until the refresh interval passes
    assert router.decide("+15555555555", BODY, OTP, None, 0.5).carrier == "cheap"
    refresh = router.health.config.refresh_s
    assert router.decide("+15555555555", BODY, OTP, None, 0.0 + refresh).carrier == "good"


def test_an_open_breaker_is_skipped_without_a_re_rank() -> None:
    carriers = {
        "good": Carrier("good", "g", "direct", 1.0, 0.99, 100.0),
        "cheap": Carrier("cheap", "c", "aggregator", 1.0, 0.99, 100.0),
    }
    decks = {"good": {"1": (0.010, "x")}, "cheap": {"1": (0.009, "x")}}
    router = Router(RouteTable(carriers, decks, COUNTRIES))
    first = router.decide("+15555555555", BODY, OTP, None, 0.0)
    assert first.carrier == "cheap"
    router.health.status("cheap", online=False, now=0.5)
    second = router.decide("+15555555555", BODY, OTP, None, 0.5)
    assert second.carrier == "good"
    assert second.routes is first.routes, "the cached ranking still serves"
    assert "cheap breaker open" in second.reason
    router.health.status("cheap", online=True, now=1.0)
    assert router.decide("+15555555555", BODY, OTP, None, 1.0).carrier == "cheap"  # probe


def test_offline_status_opens_until_online() -> None:
    health = Health()
    health.status("a", online=False, now=0.0)
    health.tick(10_000.0)
    assert health.breaker("a") is Breaker.OPEN
    assert "a" in health.unavailable
    health.status("a", online=True, now=10_001.0)
    assert health.breaker("a") is Breaker.HALF_OPEN
    assert "a" in health.half_open


def test_collapsing_delivery_rate_opens_the_breaker() -> None:
    c = Carrier("a", "a", "direct", 1.0, 0.9, 10.0)
    health = Health()
    for _ in range(health.config.collapse_min_reports + 40):
        health.delivery(c, "AA", False, None, now=5.0)
    assert health.breaker("a") is Breaker.OPEN
    assert "collapsed" in health.breaker_reason("a")


def test_bucket_params_allow_one_second_of_burst() -> None:
    interval, tau = bucket_params(Carrier("a", "a", "direct", 1.0, 0.9, 10.0))
    assert interval == 0.1
    assert round(tau, 6) == 0.9


@given(to=st.text(max_size=20))
def test_anything_that_is_not_e164_is_refused_with_21211(to: str) -> None:
    carriers = {"a": Carrier("a", "a", "direct", 1.0, 0.9, 1e9)}
    router = Router(RouteTable(carriers, {"a": {"1": (0.01, "x")}}, COUNTRIES))
    decision = router.decide(to, BODY, OTP, None, 0.0)
    digits = "".join(ch for ch in to if ch in "0123456789")
    plain = to.startswith("+") and to[1:].isascii() and to[1:].isdigit()
    if plain and 7 <= len(digits) <= 15 and digits.startswith("1"):
        assert decision.code == 0
    elif not to.strip().startswith("+"):
        assert decision.code == Code.INVALID_DESTINATION


def test_refusals_carry_their_codes() -> None:
    carriers = {"a": Carrier("a", "a", "direct", 1.0, 0.9, 1e9)}
    router = Router(RouteTable(carriers, {"a": {"1": (0.01, "x")}}, COUNTRIES))
    assert router.decide("+15555555555", "", OTP).code == Code.EMPTY_BODY
    assert router.decide("+15555555555", "a" * 1601, OTP).code == Code.BODY_TOO_LONG
    assert router.decide("+15555555555", "a" * 1600, OTP).segments == 11
    assert router.decide("+25555555555", "hi", OTP).code == Code.NO_ROUTE
    assert router.decide("+95555555555", "hi", OTP).code == Code.INVALID_DESTINATION
    assert router.decide("+1 (555) 555-5555", "hi", OTP).code == 0
    assert router.decide("15555555555", "hi", OTP).code == Code.INVALID_DESTINATION


def test_the_policy_passed_to_the_router_orders_its_routes() -> None:
    carriers = {
        "good": Carrier("good", "g", "direct", 1.0, 0.99, 100.0),
        "cheap": Carrier("cheap", "c", "aggregator", 9.0, 0.30, 100.0),
    }
    decks = {"good": {"1": (0.010, "x")}, "cheap": {"1": (0.009, "x")}}
    table = RouteTable(carriers, decks, COUNTRIES)
    default = Router(table).decide("+15555555555", BODY, OTP, None, 0.0)
    assert default.carrier == "good"  # the expected cost of a 30% carrier is higher
    assert default.reason == EXPECTED_COST.reason(OTP)
    cheapest = Router(table, policy=CheapestFirst()).decide("+15555555555", BODY, OTP)
    assert [r.carrier for r in cheapest.routes] == ["cheap", "good"]
    assert cheapest.reason.startswith("always-cheapest")
    direct = Router(table, policy=DirectFirst()).decide("+15555555555", BODY, MARKETING)
    assert [r.carrier for r in direct.routes] == ["good", "cheap"]
