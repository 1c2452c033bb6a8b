"""The seeded request generator: same seed and mix, same messages (pure, no I/O).

Everything expensive (number stems, body pools, cumulative weights) is prepared in the
constructor; ``next`` costs a handful of random draws. ``created_at`` is the caller's:
it is the send time, the one thing a seed does not decide.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect
from collections.abc import Sequence
from typing import Generic, TypeVar

from router.contracts.wire import MessageClass, SendRequest
from router.tools.load.bodies import CODE, CODE_LEN, Body, build_pool
from router.tools.load.mix import CLASSES, SEGMENT_BUCKETS, Mix
from router.tools.load.numbers import NumberPlan, Stem

T = TypeVar("T")

VALIDITY_S: tuple[int, ...] = (60, 300, 600, 3600, 14400, 86400)
OTP_VALIDITY_S: tuple[int, ...] = (60, 120, 300, 600)
MESSAGE_CLASSES: tuple[MessageClass, ...] = ("otp", "transactional", "marketing")
SENDERS: tuple[str, ...] = ("Acme", "Parcelo", "MyBank", "RideNow", "ShopMart", "+15005550006")


class Weighted(Generic[T]):
    """A seeded weighted choice with precomputed cumulative weights."""

    def __init__(self, items: Sequence[T], weights: Sequence[float]) -> None:
        pairs = [(i, w) for i, w in zip(items, weights, strict=True) if w > 0]
        if not pairs:
            raise ValueError("nothing to choose from: every weight is zero")
        self.items = [i for i, _ in pairs]
        self.cumulative = list(itertools.accumulate(w for _, w in pairs))
        self.total = self.cumulative[-1]
        self._bounds = [c / self.total for c in self.cumulative[:-1]]

    def pick(self, rng: random.Random) -> T:
        return self.items[bisect(self._bounds, rng.random())]

    def share(self, item: T) -> float:
        """The probability of ``item`` (for reports and tests)."""
        if item not in self.items:
            return 0.0
        i = self.items.index(item)
        return (self.cumulative[i] - (self.cumulative[i - 1] if i else 0.0)) / self.total


def country_weights(plan: NumberPlan, mix: Mix) -> dict[str, float]:
    """Share per reachable country: the listed ones as weighted, renormalised, and
    ``tail_share`` over the rest, Zipf by deck size (1/rank)."""
    listed = {r: w for r, w in mix.countries.items() if r in plan.stems and w > 0}
    rest = sorted(
        (r for r in plan.stems if r not in mix.countries),
        key=lambda r: (-plan.prefix_counts.get(r, 0), r),
    )
    tail = mix.tail_share if rest else 0.0
    if not listed:
        tail = 1.0 if rest else 0.0
    weights: dict[str, float] = {}
    total = sum(listed.values())
    for r, w in listed.items():
        weights[r] = (1.0 - tail) * w / total
    harmonic = sum(1.0 / k for k in range(1, len(rest) + 1))
    for k, r in enumerate(rest, start=1):
        weights[r] = tail / k / harmonic
    return weights


class Traffic:
    """Draws requests: ``Traffic(plan, mix, seed, id_prefix).next(created_at)``."""

    def __init__(self, plan: NumberPlan, mix: Mix, seed: int, id_prefix: str) -> None:
        self.mix = mix
        self.id_prefix = id_prefix
        self._rng = random.Random(f"{seed}/traffic")
        self._counter = itertools.count(1)
        self.countries = country_weights(plan, mix)
        self._country: Weighted[str] = Weighted(list(self.countries), list(self.countries.values()))
        self._stems = plan.stems
        self._class: Weighted[MessageClass] = Weighted(
            list(MESSAGE_CLASSES), [mix.classes.get(c, 0.0) for c in MESSAGE_CLASSES]
        )
        self._bucket: Weighted[str] = Weighted(
            list(SEGMENT_BUCKETS), [mix.segments.get(b, 0.0) for b in SEGMENT_BUCKETS]
        )
        self._pools: dict[tuple[str, bool, str], tuple[Body, ...]] = {
            (c, u, b): build_pool(seed, c, u, b)
            for c in CLASSES
            for u in (False, True)
            for b in SEGMENT_BUCKETS
        }
        accounts = [f"AC{random.Random(f'{seed}/account/{i}').getrandbits(32):08x}"
                    for i in range(mix.accounts)]  # fmt: skip
        self._account: Weighted[str] = Weighted(
            accounts, [1.0 / k for k in range(1, len(accounts) + 1)]
        )
        self._sender = {a: SENDERS[i % len(SENDERS)] for i, a in enumerate(accounts)}

    def destination(self) -> tuple[str, Stem | None]:
        """An E.164 destination and its stem, or an invalid one (stem None)."""
        rng = self._rng
        if rng.random() < self.mix.invalid_share:
            return self._invalid(), None
        stems = self._stems[self._country.pick(rng)]
        stem = stems[int(rng.random() * len(stems))]
        return f"+{stem.digits}{int(rng.random() * 10**stem.tail):0{stem.tail}d}", stem

    def _invalid(self) -> str:
        rng = self._rng
        region = self._country.pick(rng)
        stem = rng.choice(self._stems[region])
        number = f"{stem.digits}{rng.randrange(10**stem.tail):0{stem.tail}d}"
        kind = rng.randrange(6)
        if kind == 0:
            return f"+{number[: max(3, len(number) - 4)]}"  # too short
        if kind == 1:
            return f"+{number}{rng.randrange(1000, 10000)}"  # too long
        if kind == 2:
            return f"0{number[1:]}"  # national format, no '+'
        if kind == 3:
            return f"+{number[:4]}CALLNOW"  # letters
        if kind == 4:
            return f"+999{rng.randrange(10**8):08d}"  # unassigned country code
        return ""  # empty

    def next(self, created_at: int | None = None) -> SendRequest:
        rng = self._rng
        mix = self.mix
        to, stem = self.destination()
        cls = self._class.pick(rng)
        unicode = rng.random() < mix.unicode_share
        pool = self._pools[cls, unicode, self._bucket.pick(rng)]
        body = pool[int(rng.random() * len(pool))]
        text = body.text
        if body.has_code:
            text = text.replace(CODE, f"{int(rng.random() * 10**CODE_LEN):0{CODE_LEN}d}")
        account = self._account.pick(rng)
        max_price: float | None = None
        if rng.random() < mix.cap_share:
            base = (stem.price if stem is not None else 0.01) * max(1, body.segments)
            if rng.random() < mix.cap_too_low_share:
                factor = rng.uniform(0.2, 0.9)
            else:
                factor = math.exp(rng.uniform(0.0, math.log(4.0)))  # 1x to 4x the cheapest
            max_price = round(base * factor, 5)
        validity_s: float | None = None
        if rng.random() < mix.validity_share:
            validity_s = float(rng.choice(OTP_VALIDITY_S if cls == "otp" else VALIDITY_S))
        sender = self._sender[account] if rng.random() < mix.sender_share else None
        return SendRequest(
            id=f"{self.id_prefix}{next(self._counter):08d}",
            to=to,
            body=text,
            account=account,
            sender=sender,
            cls=cls,
            max_price=max_price,
            validity_s=validity_s,
            created_at=created_at,
        )
