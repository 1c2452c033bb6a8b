"""Which offsets may be committed: per partition, everything below the lowest record that
is still in flight.

Records of a partition are processed concurrently and finish in any order. A record is
*done* when its outcome is durable (its ``sent``/``failed`` receipt or its dead-letter
record acknowledged by Kafka). The committable offset of a partition is the offset of its
lowest record not yet done, or one past the highest record seen when all are done:
committing it can never skip a record that has no durable outcome.

``settled`` lets the shell wait, without polling, until given partitions (a rebalance's
revoked ones) or all of them (a drain) have nothing in flight: the tracker wakes the
waiters from ``done`` and ``forget``, the calls that lower the counts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class _Partition:
    __slots__ = ("committed", "done", "in_order", "next_offset")

    def __init__(self) -> None:
        self.in_order: deque[int] = deque()  # offsets in flight, in the order they came
        self.done: set[int] = set()  # finished offsets still behind an unfinished one
        self.next_offset: int | None = None  # one past the highest offset seen
        self.committed: int | None = None  # the last offset handed out for a commit


class OffsetTracker(Generic[P]):
    """Tracks in-flight records per partition. Not thread-safe: one event loop owns it."""

    __slots__ = ("_parts", "_waiters", "in_flight")

    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}
        self.in_flight = 0
        # (the partitions waited for, or None for all; the event to set once they settle)
        self._waiters: list[tuple[Collection[P] | None, asyncio.Event]] = []

    def add(self, partition: P, offset: int) -> None:
        """A record was taken in. Offsets of one partition must come in increasing order."""
        p = self._parts.get(partition)
        if p is None:
            p = self._parts[partition] = _Partition()
        if p.next_offset is not None and offset < p.next_offset:
            raise ValueError(f"{partition}: offset {offset} came after {p.next_offset - 1}")
        p.in_order.append(offset)
        p.next_offset = offset + 1
        self.in_flight += 1

    def done(self, partition: P, offset: int) -> None:
        """The record's outcome is durable. Unknown partitions (revoked) are ignored."""
        p = self._parts.get(partition)
        if p is None:
            return
        self.in_flight -= 1
        order = p.in_order
        if order and order[0] == offset:
            order.popleft()
            done = p.done
            while order and order[0] in done:
                done.remove(order.popleft())
        else:
            p.done.add(offset)
        if self._waiters:
            self._wake()

    def owns(self, partition: P) -> bool:
        """Whether ``partition`` is tracked (taken in and not forgotten since)."""
        return partition in self._parts

    def pending(self, partition: P) -> int:
        p = self._parts.get(partition)
        return 0 if p is None else len(p.in_order) - len(p.done)

    def committable(self, partition: P) -> int | None:
        """The offset to commit for ``partition`` now, or None if nothing was seen."""
        p = self._parts.get(partition)
        if p is None or p.next_offset is None:
            return None
        return p.in_order[0] if p.in_order else p.next_offset

    def to_commit(self) -> dict[P, int]:
        """Offsets that moved since the last call, to commit now (and remember as handed out)."""
        out: dict[P, int] = {}
        for partition, p in self._parts.items():
            if p.next_offset is None:
                continue
            offset = p.in_order[0] if p.in_order else p.next_offset
            if offset != p.committed:
                out[partition] = offset
        return out

    def committed(self, offsets: dict[P, int]) -> None:
        """The commit of ``offsets`` succeeded."""
        for partition, offset in offsets.items():
            p = self._parts.get(partition)
            if p is not None:
                p.committed = offset

    def forget(self, partition: P) -> int:
        """Stop tracking a revoked partition; returns how many of its records were in flight.

        Their outcomes may still be written, but their offsets are never committed by this
        worker: the partition's new owner reads them again (at-least-once)."""
        p = self._parts.pop(partition, None)
        if p is None:
            return 0
        lost = len(p.in_order) - len(p.done)
        self.in_flight -= lost
        if self._waiters:
            self._wake()
        return lost

    def partitions(self) -> list[P]:
        return list(self._parts)

    def is_settled(self, partitions: Collection[P] | None = None) -> bool:
        """Whether nothing of ``partitions`` (None: of any partition) is in flight."""
        if partitions is None:
            return self.in_flight == 0
        return not any(self.pending(p) for p in partitions)

    async def settled(self, partitions: Collection[P] | None = None) -> None:
        """Return once nothing of ``partitions`` (None: of any partition) is in flight.
        The caller bounds the wait (``asyncio.timeout``)."""
        if self.is_settled(partitions):
            return
        event = asyncio.Event()
        waiter = (partitions, event)
        self._waiters.append(waiter)
        try:
            await event.wait()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            partitions, event = waiter
            if self.is_settled(partitions):
                self._waiters.remove(waiter)
                event.set()
