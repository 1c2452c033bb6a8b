"""The routing decision: destination, segments, lookup, ranking, throttle and breaker.

``Router.decide`` is the hot path. It is one function on purpose: in CPython every call
and attribute load costs, so the common case (an E.164 number typed as ``+digits``, an
ASCII GSM-7 body, a cached ranking, the best carrier free) runs inline, and everything
else falls through to the general code in ``e164``, ``segments`` and below. The router
mutates only the throttle's buckets, the half-open breaker it probes and each entry's
ranking cache; it does no I/O and reads the time from its ``now`` argument.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import msgspec

from router.contracts.codes import Code, Scope, meaning
from router.contracts.wire import quote
from router.core.e164 import MAX_DIGITS, MIN_DIGITS, normalise
from router.core.health import Health
from router.core.policy import CLASSES, TRANSACTIONAL, Route, rank
from router.core.segments import ASCII_BASIC, GSM7, MAX_CHARS, PART_GSM7, count
from router.core.table import Entry, Quote, RouteTable
from router.core.throttle import Throttle, bucket_params

MAX_TYPED = 64
"""A destination longer than this, formatting included, is refused without parsing."""

BEST_REASON = tuple(
    f"best {c} route: lowest score (expected cost per delivered message"
    f"{' plus latency and failure costs' if c != 'marketing' else ''})"
    for c in CLASSES
)


class Decision(msgspec.Struct, frozen=True, gc=False):
    """Where a message goes, or why it goes nowhere (``code`` != 0)."""

    code: int  # 0 when routed, else an ``errors`` code
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


class Router:
    """The routing core's state: a route table (swappable), health and throttles."""

    __slots__ = ("_memo", "_memo_epoch", "health", "table", "throttle")

    def __init__(
        self, table: RouteTable, health: Health | None = None, throttle: Throttle | None = None
    ) -> None:
        self.table = table
        self.health = health or Health()
        self.throttle = throttle or Throttle()
        # Many entries share one set of quotes (every NANP area code the same country-wide
        # aggregator prices, say): their ranking is computed once per (country, class,
        # quotes) and health publication, not once per entry.
        self._memo: dict[tuple[str, int], dict[tuple[Quote, ...], tuple[Route, ...]]] = {}
        self._memo_epoch = -1

    def swap(self, table: RouteTable) -> None:
        """Replace the route table atomically (one reference assignment)."""
        self.table = table
        self._memo = {}

    def decide(
        self,
        to: str,
        body: str,
        cls: int = TRANSACTIONAL,
        max_price: float | None = None,
        now: float = 0.0,
    ) -> Decision:
        """Route one message. ``cls`` indexes ``policy.CLASSES``; ``now`` is monotonic s."""
        d = to[1:]
        n = len(d)
        number = to
        if not (d.isdigit() and d.isascii() and to[:1] == "+" and MIN_DIGITS <= n <= MAX_DIGITS):
            norm = normalise(to) if n <= MAX_TYPED else None
            if norm is None:
                return refusal(
                    Code.INVALID_DESTINATION, f"{quote(to, 40)!r} is not +digits in E.164"
                )
            d = norm
            n = len(d)
            number = "+" + d
        nb = len(body)
        if (
            body.isascii()
            and 0 < nb <= MAX_CHARS
            and not body.encode().translate(None, ASCII_BASIC)
        ):
            segs = 1 if nb <= 160 else -(-nb // PART_GSM7)
            enc = GSM7
        else:
            sg = count(body)
            if sg.code:
                return refusal(sg.code, "", sg.encoding, 0)
            segs = sg.segments
            enc = sg.encoding
        table = self.table
        get = table.by_key.get
        e = get(d[: table.root])
        if e is not None:
            nxt = e.next
            while nxt:
                if nxt > n:  # a number shorter than the next level: rare, slow path
                    e = table.short(d)
                    break
                x = get(d[:nxt])
                if x is None:
                    break
                e = x
                nxt = x.next
        elif n < table.root:
            e = table.short(d)
        if e is None:
            return refusal(Code.INVALID_DESTINATION, "unknown country code", enc, segs)
        if n not in e.lengths:
            return refusal(Code.INVALID_DESTINATION, f"{n} digits is not a valid length", enc, segs)
        health = self.health
        if now >= health.deadline:
            self.tick(now)
        if e.epoch == health.epoch:
            routes = e.ranked[cls]
            if routes is None:
                routes = self._rank(e, cls)
        else:
            routes = self._rank(e, cls)
        if max_price is not None and e.cheapest * segs > max_price:
            return self._unroutable(e, routes, segs, enc, max_price)
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
                        BEST_REASON[cls]
                        if not i
                        else self._spill(routes, i, segs, cls, max_price, unavailable)
                    )
                    return Decision(
                        0,
                        cid,
                        price * segs,
                        segs,
                        enc,
                        reason,
                        e.country,
                        routes,
                        i,
                        max_price,
                        number,
                    )
            i += 1  # noqa: SIM113 - counts only skipped routes; enumerate costs every message
        return self._unroutable(e, routes, segs, enc, max_price)

    def tick(self, now: float) -> None:
        """Let health publish; drop the cached rankings of the countries that changed."""
        by_country = self.table.by_country
        memo = self._memo
        for country in self.health.tick(now):
            for e in by_country.get(country, ()):
                e.epoch = -1
            for cls in range(len(CLASSES)):
                memo.pop((country, cls), None)

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
        """The cached order of ``entry``'s carriers for ``cls``, recomputed if stale."""
        if entry.epoch == self.health.epoch:
            routes = entry.ranked[cls]
            if routes is not None:
                return routes
        return self._rank(entry, cls)

    def _rank(self, e: Entry, cls: int) -> tuple[Route, ...]:
        health = self.health
        ranked = e.ranked
        if e.epoch != health.epoch or isinstance(ranked, tuple):
            ranked = e.ranked = [None, None, None]
            e.epoch = health.epoch
        if self._memo_epoch != health.epoch:  # the whole health was replaced or reset
            self._memo = {}
            self._memo_epoch = health.epoch
        country = e.country
        memo = self._memo.get((country, cls))
        if memo is None:
            memo = self._memo[(country, cls)] = {}
        quotes = e.quotes
        routes = memo.get(quotes)
        if routes is None:
            # Every carrier is ranked, open breakers too: decide() skips those, so a
            # breaker opening or closing never costs a re-rank.
            routes = memo[quotes] = rank(
                quotes,
                self.table.carriers,
                cls,
                lambda c: health.estimate(c, country),
                bucket_params,
            )
        ranked[cls] = routes
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

    def _unroutable(
        self,
        e: Entry,
        routes: tuple[Route, ...],
        segs: int,
        enc: str,
        max_price: float | None,
    ) -> Decision:
        quotes = e.quotes
        if not quotes:
            return refusal(Code.NO_ROUTE, f"+{e.prefix} ({e.country})", enc, segs)
        if max_price is not None and e.cheapest * segs > max_price:
            return refusal(
                Code.NO_ROUTE_WITHIN_PRICE,
                f"cheapest is {e.cheapest * segs:.5f} USD for {segs} segment(s), "
                f"max_price {max_price}",
                enc,
                segs,
            )
        affordable = [q for q in quotes if max_price is None or q.price * segs <= max_price]
        blocked = self.health.unavailable
        if all(q.carrier in blocked for q in affordable):
            return refusal(Code.CARRIERS_UNAVAILABLE, "", enc, segs)
        return refusal(Code.QUEUE_OVERFLOW, "", enc, segs)
