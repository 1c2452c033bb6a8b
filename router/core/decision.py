"""The routing decision: validation, ranking, throttle and breaker.

``Router.decide`` is the hot path. It stays short on purpose: in CPython every call and
attribute load costs, so the common case (an E.164 number typed as ``+digits``, an ASCII
GSM-7 body, a cached ranking, the best carrier free) runs in two functions, this one and
``validation.validate`` (the stateless checks every caller shares), and everything else
falls through to the general code in ``e164``, ``segments`` and below.

The router owns every cache it computes: the rankings live here, beside the route table
they were computed from (``_Compiled``), never on the table, and ``swap`` replaces table
and rankings in one assignment. Besides its caches it mutates only the throttle's buckets
and the half-open breaker it probes; it does no I/O and reads the time from its ``now``
argument.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import msgspec

from router.contracts.codes import Code, Scope, meaning
from router.core.health import Health
from router.core.policy import EXPECTED_COST, Policy
from router.core.segments import GSM7
from router.core.table import Entry, RouteTable
from router.core.throttle import Throttle, bucket_params
from router.core.types import CLASSES, TRANSACTIONAL, Quote, Route
from router.core.validation import validate


class Decision(msgspec.Struct, frozen=True, gc=False):
    """Where a message goes, or why it goes nowhere (``code`` != 0)."""

    code: int  # 0 when routed, else a ``router.contracts.codes.Code``
    carrier: str | None
    price: float  # USD for the whole message: price per segment x segments
    segments: int
    encoding: str
    reason: str
    country: str
    # the ranked candidates for the class; carriers whose breaker is open stay in the list
    # (the choice skipped them, and so must a failover: see Health.unavailable)
    routes: tuple[Route, ...]
    chosen: int  # index of the chosen route in ``routes``; -1 when not routed
    max_price: float | None
    number: str = ""  # the destination normalised to E.164 ('+' and digits) when routed

    @property
    def routed(self) -> bool:
        return self.code == 0

    def fallbacks(self) -> tuple[Route, ...]:
        """The routes to fail over to, in order: after the chosen one, within max_price."""
        if self.chosen < 0:
            return ()
        rest = self.routes[self.chosen + 1 :]
        if self.max_price is None:
            return rest
        cap, segs = self.max_price, self.segments
        return tuple(r for r in rest if r.price * segs <= cap)


def refusal(code: int, detail: str = "", encoding: str = GSM7, segments: int = 0) -> Decision:
    reason = meaning(Scope.FAILED, code) + (f": {detail}" if detail else "")
    return Decision(code, None, 0.0, segments, encoding, reason, "", (), -1, None)


class _Compiled:
    """A route table and the rankings computed from it, replaced together by a swap.

    ``by_class[cls][entry.slot]``: the entry's routes for that class, None until ranked
    (or since its country's health moved). ``shared[(country, cls)]``: quotes -> routes.
    Many entries share one set of quotes (every NANP area code the same country-wide
    aggregator prices, say): their ranking is computed once per (country, class, quotes)
    and health publication, not once per entry.
    """

    __slots__ = ("by_class", "shared", "table")

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.by_class: tuple[list[tuple[Route, ...] | None], ...] = tuple(
            [None] * table.size for _ in CLASSES
        )
        self.shared: dict[tuple[str, int], dict[tuple[Quote, ...], tuple[Route, ...]]] = {}

    def forget(self, country: str) -> None:
        """Drop every ranking toward ``country`` (its health estimates were published)."""
        entries = self.table.by_country.get(country, ())
        for ranked in self.by_class:
            for e in entries:
                ranked[e.slot] = None
        for cls in range(len(CLASSES)):
            self.shared.pop((country, cls), None)


class Router:
    """The routing core's state: a route table with its rankings (swapped together),
    the policy that ranks (fixed at construction), health and throttles. ``health`` is
    fed by the shell but never replaced: the cached rankings were computed from it."""

    __slots__ = ("_best", "_live", "_policy", "health", "throttle")

    def __init__(
        self,
        table: RouteTable,
        health: Health | None = None,
        throttle: Throttle | None = None,
        policy: Policy = EXPECTED_COST,
    ) -> None:
        self._live = _Compiled(table)
        self.health = health or Health()
        self.throttle = throttle or Throttle()
        self._policy = policy
        self._best = tuple(policy.reason(cls) for cls in range(len(CLASSES)))

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def table(self) -> RouteTable:
        """The route table decisions use now (replace it with ``swap``)."""
        return self._live.table

    def swap(self, table: RouteTable) -> None:
        """Replace the route table and its rankings in one reference assignment: a
        decision reads both through one reference, so it never meets the new table with
        the old rankings or the other way round. Health and throttles carry over."""
        self._live = _Compiled(table)

    def decide(
        self,
        to: str,
        body: str,
        cls: int = TRANSACTIONAL,
        max_price: float | None = None,
        now: float = 0.0,
    ) -> Decision:
        """Route one message. ``cls`` indexes ``CLASSES``; ``now`` is monotonic seconds."""
        health = self.health
        if now >= health.deadline:
            self.tick(now)
        live = self._live
        code, detail, number, segs, enc, e = validate(live.table, to, body, max_price)
        if code:
            return refusal(code, detail, enc, segs)
        routes = live.by_class[cls][e.slot]
        if routes is None:  # not ranked yet, or its country's health moved since
            routes = self._rank(live, e, cls)
        tat = self.throttle.tat
        half_open = health.half_open
        unavailable = health.unavailable
        i = 0
        for cid, price, interval, tau, _, _, _, _, _ in routes:
            if (max_price is None or price * segs <= max_price) and cid not in unavailable:
                t = tat.get(cid, now)
                if t < now:
                    t = now
                if t - now <= tau:
                    tat[cid] = t + interval
                    if half_open and cid in half_open:
                        health.probe_taken(cid)
                    reason = (
                        self._best[cls]
                        if not i
                        else self._spill(routes, i, segs, cls, max_price, unavailable)
                    )
                    return Decision(0, cid, price * segs, segs, enc, reason, e.country, routes,
                                    i, max_price, number)  # fmt: skip
            i += 1  # noqa: SIM113 - counts only skipped routes; enumerate costs every message
        return self._unroutable(e, segs, enc, max_price)

    def tick(self, now: float) -> None:
        """Let health publish; drop the cached rankings of the countries that changed."""
        live = self._live
        for country in self.health.tick(now):
            live.forget(country)

    def next_route(
        self,
        routes: Sequence[Route],
        after: int,
        segments: int,
        max_price: float | None,
        now: float,
        exclude: Collection[str] = (),
    ) -> int:
        """Failover: the index of the next route after ``after`` that is affordable, not
        behind an open breaker, not in ``exclude`` (carriers tried already) and under its
        throughput cap (taking its token, and a half-open breaker's one probe); -1 when
        there is none."""
        health = self.health
        throttle = self.throttle
        for i in range(after + 1, len(routes)):
            r = routes[i]
            if max_price is not None and r.price * segments > max_price:
                continue
            if r.carrier in exclude:
                continue
            if r.carrier in health.unavailable:
                continue
            if throttle.take(r.carrier, r.interval, r.tau, now):
                if r.carrier in health.half_open:
                    health.probe_taken(r.carrier)
                return i
        return -1

    def ranked(self, entry: Entry, cls: int) -> tuple[Route, ...]:
        """The order of ``entry``'s carriers for ``cls`` as the next decision would see
        it (from the cache, or ranked now), every carrier included."""
        live = self._live
        routes = live.by_class[cls][entry.slot]
        return routes if routes is not None else self._rank(live, entry, cls)

    def _rank(self, live: _Compiled, e: Entry, cls: int) -> tuple[Route, ...]:
        country = e.country
        shared = live.shared.get((country, cls))
        if shared is None:
            shared = live.shared[(country, cls)] = {}
        quotes = e.quotes
        routes = shared.get(quotes)
        if routes is None:
            # Every carrier is ranked, open breakers too: decide() skips those, so a
            # breaker opening or closing never costs a re-rank.
            routes = shared[quotes] = self._policy.rank(
                quotes, live.table.carriers, cls, country, self.health.estimate, bucket_params
            )
        live.by_class[cls][e.slot] = routes
        return routes

    @staticmethod
    def _spill(
        routes: tuple[Route, ...],
        chosen: int,
        segs: int,
        cls: int,
        max_price: float | None,
        unavailable: set[str],
    ) -> str:
        skipped = "; ".join(
            f"{r.carrier} above max_price"
            if max_price is not None and r.price * segs > max_price
            else f"{r.carrier} breaker open"
            if r.carrier in unavailable
            else f"{r.carrier} at throughput cap"
            for r in routes[:chosen]
        )
        return f"rank {chosen + 1} for {CLASSES[cls]}, spilled over from: {skipped}"

    def _unroutable(self, e: Entry, segs: int, enc: str, max_price: float | None) -> Decision:
        """A valid, affordable message no carrier can take now: all behind open breakers
        (39001), or some at their throughput cap (30001, the worker holds and retries)."""
        affordable = [q for q in e.quotes if max_price is None or q.price * segs <= max_price]
        blocked = self.health.unavailable
        if all(q.carrier in blocked for q in affordable):
            return refusal(Code.CARRIERS_UNAVAILABLE, "", enc, segs)
        return refusal(Code.QUEUE_OVERFLOW, "", enc, segs)
