"""The write-ahead log of carrier attempts, and the memory of message ids built from it.

Why: a carrier deduplicates the message ids it accepted, but only its own. A request read
again after its worker died, or repeated by a producer, would be routed afresh (with fresh
throttles and health) and could go to a *second* carrier. So before a submit leaves the
worker, the attempt (id, carrier, attempt number, the carriers tried before) is appended
to an internal compacted topic, partitioned like the requests (request partition ``p`` ->
attempts partition ``p``), and the submit waits for Kafka's acknowledgement. When a
message's outcome is written, an outcome record follows (``sent`` with the billed price,
or ``failed`` with its code).

Whoever owns a requests partition keeps an ``AttemptMemory`` of its recent ids: built by
the worker's own attempts, and on assignment restored from the attempts partition's last
``dedupe_window_s`` seconds (``offsets_for_times``), before a record of that partition is
handled. With it:

- a re-read request whose attempt is known goes to the *same* carrier with the same id
  and attempt number (the carrier answers a repeat as a duplicate: never delivered
  twice), and fails over only if that carrier rejects it;
- a repeated request id whose outcome is known gets that outcome again (the same
  ``sent`` or ``failed`` receipt) without a submit; one still in flight is answered when
  the original is.

Why a time window and not a log position in the offset commit's metadata: the window
must be read anyway for repeated ids, and the settings check makes it longer than the
longest a message can be in flight (hold limit plus every attempt's timeouts), so a
position would add nothing. Records are msgpack arrays (``msgspec``): small, and the
topic is internal to the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

IN_FLIGHT: Final = 0
SENT: Final = 1
FAILED: Final = 2


class AttemptRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One record of the attempts log (key: the message id)."""

    id: str
    state: int  # IN_FLIGHT (an attempt about to be submitted), SENT or FAILED
    carrier: str  # the attempt's carrier ("" for a failure before any attempt)
    attempt: int
    kind: str = ""  # the carrier's kind: direct or aggregator
    price: float = 0.0  # deck price per segment of the attempt (IN_FLIGHT), billed (SENT)
    tried: tuple[str, ...] = ()  # carriers that rejected this message before
    code: int = 0  # FAILED: the error code
    segments: int = 0
    encoding: str = ""
    ts: int = 0  # ms since the Unix epoch, when the record was written


ENCODER: Final = msgspec.msgpack.Encoder()
DECODER: Final = msgspec.msgpack.Decoder(AttemptRecord)


class Known(msgspec.Struct, gc=False):
    """What this worker knows of one message id.

    Untracked by the garbage collector (``gc=False``: it holds only strings, numbers and
    a tuple of strings, so it is never part of a cycle): a worker keeps up to
    ``dedupe_max_ids`` of them for minutes, and each full collection walked them all."""

    partition: int
    seen: float  # monotonic seconds, when it entered the memory
    state: int = IN_FLIGHT
    carrier: str = ""
    attempt: int = 0
    kind: str = ""
    price: float = 0.0
    tried: tuple[str, ...] = ()
    code: int = 0
    segments: int = 0
    encoding: str = ""

    def apply(self, r: AttemptRecord) -> None:
        if r.state == IN_FLIGHT and self.state != IN_FLIGHT:
            return  # an outcome is final: a late attempt record never reopens it
        self.state = r.state
        if r.carrier:
            self.carrier = r.carrier
            self.kind = r.kind or self.kind
        self.attempt = max(self.attempt, r.attempt)
        self.price = r.price
        self.tried = r.tried or self.tried
        self.code = r.code
        self.segments = r.segments or self.segments
        self.encoding = r.encoding or self.encoding


class AttemptMemory:
    """Recent message ids of the partitions this worker owns: bounded in count and age.

    Insertion-ordered, so the oldest ids are evicted first (past ``max_ids``, or older
    than ``window_s`` when a new id comes in). Not thread-safe: one event loop owns it.
    """

    __slots__ = ("_ids", "max_ids", "window_s")

    def __init__(self, window_s: float, max_ids: int) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self._ids: dict[str, Known] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, message_id: str) -> Known | None:
        return self._ids.get(message_id)

    def entry(self, message_id: str, partition: int, now: float) -> Known:
        """The id's entry, created (evicting the oldest) when new."""
        ids = self._ids
        k = ids.get(message_id)
        if k is None:
            k = ids[message_id] = Known(partition, now)
            self._evict(now)
        return k

    def record(self, r: AttemptRecord, partition: int, now: float) -> None:
        self.entry(r.id, partition, now).apply(r)

    def restore(self, records: Iterable[AttemptRecord], partition: int, now: float) -> int:
        n = 0
        for r in records:
            self.record(r, partition, now)
            n += 1
        return n

    def forget_partitions(self, partitions: set[int]) -> int:
        """Drop the ids of revoked partitions; their next owner restores them."""
        gone = [i for i, k in self._ids.items() if k.partition in partitions]
        for i in gone:
            del self._ids[i]
        return len(gone)

    def _evict(self, now: float) -> None:
        ids = self._ids
        while len(ids) > self.max_ids:
            del ids[next(iter(ids))]
        # By age alone: the settings check makes the window outlast any message in
        # flight, so an entry older than it is not needed by one (a restored attempt whose
        # request is never read again must not hold the window open).
        horizon = now - self.window_s
        while ids and ids[next(iter(ids))].seen < horizon:
            del ids[next(iter(ids))]
