"""The store of delivery reports a carrier process published and no router has
acknowledged yet (see ``router.contracts.interconnect``: ``dlr-ack``): pure bookkeeping, the caller
passes the time; the host's outbox (``carriers.outbox``) publishes what it says is due."""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from carriers.journal import Key
from carriers.ledger import Ledger
from router.contracts import interconnect

MAX_UNACKED_REPORTS = 500_000


class _State(enum.Enum):
    FIRST = "first"  # on its way to the broker for the first time
    WAITING = "waiting"  # published: waiting for an ack, or for its time to be re-sent
    AGAIN = "again"  # on its way to the broker again


@dataclass(slots=True)
class _Held:
    report: interconnect.DeliveryReport  # the version published last (or on its way)
    state: _State
    acked: bool = False  # acknowledged while its first publication was on its way
    generation: int = 0  # which resend timer is the live one


class ReportStore:
    """Delivery reports from their first publication until a router acknowledges them.

    Pure bookkeeping (the caller passes the time): ``take`` as a report goes into a
    batch, ``published`` once the broker took the batch (starts its resend clock),
    ``ack`` for acknowledgements, ``due`` for the reports to publish again now. Keeps the
    ledger's report counters (sent, resent, acked, unacked, dropped). Bounded by
    ``limit``: past it the oldest report is given up (``reports_dropped``).
    """

    def __init__(self, ledger: Ledger, *, resend_s: float, limit: int) -> None:
        if resend_s <= 0 or limit < 1:
            raise ValueError("resend_s must be > 0 and limit >= 1")
        self.ledger = ledger
        self.resend_s = resend_s
        self.limit = limit
        self._held: OrderedDict[Key, _Held] = OrderedDict()  # by first publication
        # (when, key, generation): in time order, as every clock runs resend_s
        self._timers: deque[tuple[float, Key, int]] = deque()
        self._dropped: list[Key] = []

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: Key) -> bool:
        return key in self._held

    def take(self, report: interconnect.DeliveryReport) -> bool:
        """Whether to publish ``report`` now. A first publication is held from this moment
        (a router may ack it before its PUBACK is back); a re-send only while it is still
        held in that version (not acknowledged or given up since it was queued)."""
        key = (report.carrier, report.id)
        entry = self._held.get(key)
        if report.resent == 0:
            if entry is not None:
                return False
            self._held[key] = _Held(report, _State.FIRST)
            self._evict()
            return True
        return entry is not None and entry.report is report

    def published(
        self, reports: Sequence[interconnect.DeliveryReport], now: float
    ) -> tuple[list[Key], list[Key]]:
        """The broker took these reports: count them and start their resend clocks.
        Returns (reports acknowledged while on their way, reports given up meanwhile)."""
        held, ledger, timers = self._held, self.ledger, self._timers
        at = now + self.resend_s
        acked: list[Key] = []
        dropped: list[Key] = []
        for r in reports:
            key = (r.carrier, r.id)
            led = ledger[r.carrier]
            entry = held.get(key)
            if r.resent == 0:
                led.reports_sent += 1
                if entry is None:  # given up while it was on its way
                    led.reports_dropped += 1
                    dropped.append(key)
                    continue
                if entry.acked:
                    del held[key]
                    led.reports_acked += 1
                    acked.append(key)
                    continue
                led.reports_unacked += 1
            else:
                led.reports_resent += 1
                if entry is None or entry.report is not r:  # acked or given up meanwhile
                    continue
            entry.state = _State.WAITING
            entry.generation += 1
            timers.append((at, key, entry.generation))
        return acked, dropped

    def ack(self, acks: Sequence[interconnect.ReportAck]) -> tuple[list[Key], int]:
        """Acknowledgements: returns the keys of the reports released now, and how many
        acks named no report held here (acked before, or never sent: ignored)."""
        held, ledger = self._held, self.ledger
        released: list[Key] = []
        unknown = 0
        for a in acks:
            key = (a.carrier, a.id)
            entry = held.get(key)
            if entry is None:
                unknown += 1
            elif entry.state is _State.FIRST:
                entry.acked = True  # counted once the broker has confirmed the publish
            else:
                del held[key]
                led = ledger[a.carrier]
                led.reports_acked += 1
                led.reports_unacked -= 1
                released.append(key)
        return released, unknown

    def due(self, now: float) -> list[interconnect.DeliveryReport]:
        """The reports to publish again now (``resent`` + 1): published ``resend_s`` ago
        and not acknowledged since. They are on their way until ``published``."""
        held, timers = self._held, self._timers
        out: list[interconnect.DeliveryReport] = []
        while timers and timers[0][0] <= now:
            _, key, generation = timers.popleft()
            entry = held.get(key)
            if entry is None or entry.state is not _State.WAITING:
                continue
            if entry.generation != generation:
                continue
            entry.report = msgspec.structs.replace(entry.report, resent=entry.report.resent + 1)
            entry.state = _State.AGAIN
            out.append(entry.report)
        return out

    def next_due(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def restore(self, report: interconnect.DeliveryReport) -> None:
        """Hold a report an earlier run published and no router acknowledged; ``report``
        is its next publication (``resent`` already one more than the last)."""
        self._held[(report.carrier, report.id)] = _Held(report, _State.AGAIN)
        led = self.ledger[report.carrier]
        led.reports_restored_unacked += 1
        led.reports_unacked += 1
        self._evict()

    def take_dropped(self) -> list[Key]:
        """The reports given up (over the bound) since the last call, for the journal."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def _evict(self) -> None:
        held = self._held
        while len(held) > self.limit:
            key, entry = held.popitem(last=False)
            if entry.state is _State.FIRST:
                continue  # counted as dropped if and when the broker confirms it
            led = self.ledger[key[0]]
            led.reports_dropped += 1
            led.reports_unacked -= 1
            self._dropped.append(key)
