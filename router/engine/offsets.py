"""Which offsets may be committed: per partition, everything below the lowest record that
is still in flight.

Records of a partition are processed concurrently and finish in any order. A record is
*done* when its outcome is durable (its ``sent``/``failed`` receipt or its dead-letter
record acknowledged by Kafka). The committable offset of a partition is the offset of its
lowest record not yet done, or one past the highest record seen when all are done:
committing it can never skip a record that has no durable outcome.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
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

    __slots__ = ("_parts", "in_flight")

    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}
        self.in_flight = 0

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
        return lost

    def partitions(self) -> list[P]:
        return list(self._parts)
