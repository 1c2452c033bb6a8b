"""Attempt tokens: how any router of the fleet knows that a delivery report answers a
submit the fleet made, to the carrier process it was made to, for the price and
segments it was made for.

Why: reports reach the fleet through one shared subscription, so the router that gets a
report is seldom the one that made the attempt, and it has no record of it. So the
router that submits signs the attempt: ``token`` is an HMAC-SHA256 (truncated to 16
bytes) with the fleet's key over the carrier process it is addressed to and the
submit's own fields (id, carrier, attempt, account, segments, price, encoding, country,
submit time, sender). The carrier echoes the token and those fields in its report
(``quote`` is the echo of ``price``); whoever receives the report computes the HMAC again
over the process that the topic names (the broker's ACL lets a process publish only on
its own topics) and the echoed fields. A report that fails is forged, altered or
foreign (another process's attempt), and never becomes a receipt; one that passes
carries the router's own figures, which the receipt then uses.

A signed report can still be replayed by the process it came from. ``ReplayGuard``
refuses a report older than the horizon (its signed submit time) and remembers the
reports it let through (bounded, oldest forgotten first): a repeat of one whose receipt
is durable is acknowledged again (so its carrier stops re-sending) but not written
twice; a repeat of one still being written waits for the next re-send.

Hand-written rather than a library: it is ``hmac.digest`` over a msgpack tuple, and the
one choice to make (what is signed) is this module's doc.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from typing import Final, Literal

import msgspec

from router.contracts import interconnect

TOKEN_BYTES: Final = 16
_encode = msgspec.msgpack.Encoder().encode

Verdict = Literal["new", "forged", "stale", "pending", "repeat"]


class Signer:
    """Signs submits and checks reports with the fleet's key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the report key must have at least 16 bytes")
        self._key = key

    def _mac(self, host: str, id_: str, carrier: str, attempt: int, account: str,
             segments: int, price: float, encoding: str, country: str, ts: int,
             sender: str) -> bytes:  # fmt: skip
        fields = (host, id_, carrier, attempt, account, segments, price, encoding, country,
                  ts, sender)  # fmt: skip
        return hmac.digest(self._key, _encode(fields), "sha256")[:TOKEN_BYTES]

    def sign(self, host: str, item: interconnect.SubmitItem) -> bytes:
        return self._mac(host, item.id, item.carrier, item.attempt, item.account,
                         item.segments, item.price, item.encoding, item.country, item.ts,
                         item.sender)  # fmt: skip

    def check(self, host: str, rep: interconnect.DeliveryReport) -> bool:
        """True if ``rep`` echoes an attempt signed for process ``host``, unaltered."""
        if len(rep.token) != TOKEN_BYTES:
            return False
        expected = self._mac(host, rep.id, rep.carrier, rep.attempt, rep.account,
                             rep.segments, rep.quote, rep.encoding, rep.country,
                             rep.submitted_ts, rep.sender)  # fmt: skip
        return hmac.compare_digest(expected, rep.token)


class ReplayGuard:
    """Which signed reports this router let through, and whether their receipts are
    durable yet: at most ``capacity`` of them, the oldest forgotten first."""

    def __init__(self, signer: Signer, horizon_s: float, capacity: int) -> None:
        self.signer = signer
        self.horizon_ms = int(horizon_s * 1000)
        self.capacity = capacity
        # (token, status) -> durable?; and the key of each report awaiting its receipt
        self._seen: OrderedDict[tuple[bytes, str], bool] = OrderedDict()
        self._pending: dict[tuple[str, str, str], tuple[bytes, str]] = {}

    def admit(self, host: str, rep: interconnect.DeliveryReport, now_ms: int) -> Verdict:
        """``new``: write its receipt (then call ``durable``); ``repeat``: acknowledge it
        again, write nothing; ``pending``, ``forged``, ``stale``: drop it."""
        if not self.signer.check(host, rep):
            return "forged"
        if now_ms - rep.submitted_ts > self.horizon_ms:
            return "stale"
        key = (rep.token, rep.status)
        durable = self._seen.get(key)
        if durable is not None:
            return "repeat" if durable else "pending"
        self._seen[key] = False
        self._pending[(host, rep.carrier, rep.id)] = key
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return "new"

    def durable(self, host: str, carrier: str, message_id: str) -> None:
        """The receipt of the report of ``message_id`` at ``carrier`` via ``host`` is in
        Kafka."""
        key = self._pending.pop((host, carrier, message_id), None)
        if key is not None and key in self._seen:
            self._seen[key] = True

    def __len__(self) -> int:
        return len(self._seen)
