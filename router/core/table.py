"""The compiled route table: one longest-prefix match yields every candidate carrier.

Compilation (once per deck load, never per message):

1. The *real* prefixes are the union of every deck prefix and every country prefix
   (``e164``). Each real prefix gets an ``Entry`` holding one ``Quote`` per carrier that
   reaches it: the carrier's own row for that prefix or, failing that, the row of the
   carrier's longest shorter prefix. So an aggregator priced per country stays a
   candidate beside a direct carrier priced per operator prefix.
2. Lookup is a multibit trie laid out in one dict keyed by digit strings (controlled
   prefix expansion). The root level has length ``root``: every real prefix up to that
   length is expanded to keys of exactly that length. A key with longer prefixes below it
   is a branch: its entry says the length of the next level (``next``), chosen per
   subtree as deep as a key budget allows. A lookup probes ``d[:root]``, then
   ``d[:next]`` while the entry has a next level; a miss means the current entry is the
   answer. Typical numbers take two or three dict probes at any table size.

A ``RouteTable`` is immutable once built: nothing in it changes after ``__init__``, and
nothing routing learns (rankings, health, throttles) is stored in it. The router keeps
its caches beside the table and replaces both together (``Router.swap``): in-flight
decisions finish on the table they started with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from router.core.e164 import UNKNOWN_COUNTRY, CountryData
from router.core.types import Carrier, Quote

__all__ = ["Carrier", "Entry", "Quote", "RouteTable"]

MIN_ROOT_KEYS = 2_000  # the root level may always expand to this many keys
MIN_NODE_KEYS = 100  # any branch may expand to this many keys ...
KEYS_PER_PREFIX = 4  # ... or this many per real prefix below it, whichever is more


class Entry:
    """What a table key resolves to: plain data. ``next`` and ``slot`` are set while the
    table is built and never after: ``slot`` numbers the entries a lookup can return,
    0 .. ``RouteTable.size - 1``, so the router can keep its rankings in lists indexed by
    slot beside the table (a list index costs less than a dict probe per message)."""

    __slots__ = ("cheapest", "country", "lengths", "next", "prefix", "quotes", "slot")

    def __init__(
        self,
        prefix: str,
        country: str,
        lengths: frozenset[int],
        quotes: tuple[Quote, ...],
        next_len: int = 0,
    ) -> None:
        self.prefix = prefix  # the longest real prefix this entry stands for
        self.country = country  # ISO region, or "ZZ" when the prefix names no country
        self.lengths = lengths  # valid total digit counts for numbers in that country
        self.quotes = quotes  # one per carrier, each at its longest matching prefix
        self.cheapest = min([q.price for q in quotes]) if quotes else math.inf  # per segment
        self.next = next_len  # length of the next trie level below this key; 0: leaf
        self.slot = -1  # this entry's index among the table's reachable entries

    def branch(self, next_len: int) -> Entry:
        return Entry(self.prefix, self.country, self.lengths, self.quotes, next_len)

    def __repr__(self) -> str:
        return (
            f"Entry({self.prefix!r}, {self.country}, {len(self.quotes)} quotes, next={self.next})"
        )


def _suffixes(n: int, cache: dict[int, list[str]]) -> list[str]:
    s = cache.get(n)
    if s is None:
        s = cache[n] = [f"{i:0{n}d}" for i in range(10**n)] if n else [""]
    return s


class RouteTable:
    """Compiled carriers, quotes and the lookup dict. Immutable once built.

    ``by_country`` lists every entry a lookup can return (trie keys and real prefixes),
    by ISO region: what the router drops from its caches when a country's health moves.
    ``size``: how many such entries there are (their ``slot`` numbers).
    """

    __slots__ = ("budget", "by_country", "by_key", "carriers", "entries", "probe", "root", "size")

    def __init__(
        self,
        carriers: Mapping[str, Carrier],
        decks: Mapping[str, Mapping[str, tuple[float, str]]],
        countries: CountryData,
        budget: tuple[int, int, int] = (MIN_ROOT_KEYS, MIN_NODE_KEYS, KEYS_PER_PREFIX),
    ) -> None:
        """``decks``: carrier id -> prefix -> (price per segment, destination).

        ``budget``: (root keys, keys per branch, keys per real prefix below a branch),
        the memory allowed for fewer probes; tests shrink it to force deep tries.
        """
        self.carriers = dict(carriers)
        self.budget = budget
        own: dict[str, list[Quote]] = {p: [] for p in countries.regions}
        for cid, deck in decks.items():
            if cid not in self.carriers:
                raise ValueError(f"deck for unknown carrier {cid!r}")
            for prefix, (price, destination) in deck.items():
                own.setdefault(prefix, []).append(Quote(cid, price, prefix, destination))
        self.entries = self._inherit(own, countries)
        self.by_key: dict[str, Entry] = {}
        self.root = self._expand(sorted(self.entries, key=len))
        self.probe = self.by_key.get  # bound once: the hot path's one dict probe per level
        self.by_country: dict[str, list[Entry]] = {}
        reachable = {id(e): e for e in self.by_key.values()}
        reachable.update((id(e), e) for e in self.entries.values())  # via short()
        for slot, e in enumerate(reachable.values()):
            e.slot = slot
            self.by_country.setdefault(e.country, []).append(e)
        self.size = len(reachable)

    @staticmethod
    def _inherit(own: dict[str, list[Quote]], countries: CountryData) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        maps: dict[str, dict[str, Quote]] = {}  # carrier -> quote, per prefix with children
        no_lengths: frozenset[int] = frozenset()
        for p in sorted(own, key=len):
            parent = None
            for n in range(len(p) - 1, 0, -1):
                parent = entries.get(p[:n])
                if parent is not None:
                    break
            country = countries.regions.get(p)
            if country is None:
                country = parent.country if parent is not None else UNKNOWN_COUNTRY
            lengths = countries.lengths.get(country, no_lengths)
            mine = own[p]
            if parent is None:
                quotes = tuple(sorted(mine))
            elif mine:
                base = maps.get(parent.prefix)
                if base is None:
                    base = maps[parent.prefix] = {q.carrier: q for q in parent.quotes}
                merged = base.copy()
                for q in mine:
                    merged[q.carrier] = q
                quotes = tuple(merged.values())
            else:
                quotes = parent.quotes
            entries[p] = Entry(p, country, lengths, quotes)
        return entries

    def _best_real(self, key: str, floor: int) -> Entry | None:
        """The entry of the longest real prefix of ``key`` longer than ``floor`` digits."""
        for n in range(len(key), floor, -1):
            e = self.entries.get(key[:n])
            if e is not None:
                return e
        return None

    def _expand(self, real_by_len: list[str]) -> int:
        """Lay out the trie levels into ``by_key``; returns the root level length."""
        cache: dict[int, list[str]] = {}
        by_key = self.by_key
        root = 0
        # (node length, real prefixes below it sorted by length, node entry)
        stack: list[tuple[int, list[str], Entry | None]] = [(0, real_by_len, None)]
        while stack:
            depth, below, node = stack.pop()
            level = self._level(depth, below)
            if node is None:
                root = level
            else:
                node.next = level
            deeper: dict[str, list[str]] = {}
            for p in below:
                if len(p) <= level:
                    e = self.entries[p]
                    for s in _suffixes(level - len(p), cache):
                        by_key[p + s] = e  # ascending lengths: longer prefixes win
                else:
                    deeper.setdefault(p[:level], []).append(p)
            for k, sub in deeper.items():
                inherited = by_key.get(k) or self._best_real(k, depth) or node
                if inherited is None:  # nothing matches down to here: an empty branch
                    inherited = Entry(k, UNKNOWN_COUNTRY, frozenset(), ())
                branch = inherited.branch(0)
                by_key[k] = branch
                stack.append((level, sub, branch))
        return root

    def _level(self, depth: int, below: list[str]) -> int:
        """The deepest next level whose key count stays within the budget (upper bound:
        every expansion counted, overlaps too)."""
        root_keys, node_keys, per_prefix = self.budget
        budget = max(node_keys if depth else root_keys, per_prefix * len(below))
        histogram: dict[int, int] = {}
        for p in below:
            histogram[len(p)] = histogram.get(len(p), 0) + 1
        deepest = max(histogram)
        best = depth + 1
        for level in range(depth + 1, deepest + 1):
            cost = 0
            for length, n in histogram.items():
                cost += n * 10 ** (level - length) if length <= level else n
            if cost > budget:
                break
            best = level
        return best

    def lookup(self, digits: str) -> Entry | None:
        """The entry for the longest table key that prefixes ``digits`` (reference path)."""
        get = self.by_key.get
        e = get(digits[: self.root])
        if e is None:
            return None if len(digits) >= self.root else self.short(digits)
        while e.next:
            if e.next > len(digits):
                return self.short(digits)
            x = get(digits[: e.next])
            if x is None:
                break
            e = x
        return e

    def short(self, digits: str) -> Entry | None:
        """Slow path for a number shorter than the next trie level: probe real prefixes."""
        return self._best_real(digits, 0)

    def stats(self) -> dict[str, int]:
        return {
            "carriers": len(self.carriers),
            "prefixes": len(self.entries),
            "keys": len(self.by_key),
            "root": self.root,
        }
