"""The ground truth of what every carrier did, to prove nothing was lost or sent twice.

Per carrier: every submit item received (``submits``), split into ``accepted`` (unique
messages taken), ``repeats`` (ids accepted before: acknowledged, not delivered again),
``rejected`` by reason, and ``ignored_offline`` (no answer while offline). Each accepted
message is decided at once: ``delivered`` or ``undelivered`` (the truth at the handset);
its report is then ``reports_sent`` (published the first time), ``reports_lost`` (never
sent, on purpose) or still pending when the process stopped (``reports_pending``).

A published report is held until a router acknowledges it (``reports_acked``) and is
published again meanwhile (``reports_resent`` counts those publishes); ``reports_unacked``
is how many are held now, and ``reports_dropped`` those given up because the store of
unacknowledged reports was full. A process started on a journal (``carriers.journal``)
takes over the previous run's reports: ``reports_restored`` were never published and are
pending again, ``reports_restored_unacked`` were published and are held again (their next
publication is a re-send). The counters are this process's own; so, per carrier:

    submits == accepted + repeats + sum(rejected) + ignored_offline
    accepted == delivered + undelivered
    accepted + reports_restored == reports_sent + reports_lost + reports_pending
    reports_unacked == reports_sent + reports_restored_unacked - reports_acked
                       - reports_dropped

Exposed as Prometheus metrics (``supernet_carrier_*``) through a collector that reads
the counters at scrape time, declared against a registry that is passed in, and written
as a JSON summary on exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


@dataclass(slots=True)
class CarrierLedger:
    carrier: str
    submits: int = 0
    accepted: int = 0
    repeats: int = 0
    delivered: int = 0
    undelivered: int = 0
    reports_sent: int = 0
    reports_lost: int = 0
    reports_resent: int = 0
    reports_acked: int = 0
    reports_dropped: int = 0
    reports_unacked: int = 0  # a gauge: held now, waiting for an acknowledgement
    reports_restored: int = 0
    reports_restored_unacked: int = 0
    ignored_offline: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    online: bool = False

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    @property
    def reports_pending(self) -> int:
        return (
            self.delivered
            + self.undelivered
            + self.reports_restored
            - self.reports_sent
            - self.reports_lost
        )

    def summary(self) -> dict[str, object]:
        return {
            "submits": self.submits,
            "accepted": self.accepted,
            "repeats": self.repeats,
            "rejected": dict(sorted(self.rejected.items())),
            "ignored_offline": self.ignored_offline,
            "delivered": self.delivered,
            "undelivered": self.undelivered,
            "reports_sent": self.reports_sent,
            "reports_lost": self.reports_lost,
            "reports_pending": self.reports_pending,
            "reports_resent": self.reports_resent,
            "reports_acked": self.reports_acked,
            "reports_unacked": self.reports_unacked,
            "reports_dropped": self.reports_dropped,
            "reports_restored": self.reports_restored,
            "reports_restored_unacked": self.reports_restored_unacked,
        }


_COUNTERS = (
    ("submits", "Submit items received"),
    ("accepted", "Unique messages accepted"),
    ("repeats", "Repeated message ids acknowledged without a second delivery"),
    ("ignored_offline", "Submit items left unanswered while the carrier was offline"),
    ("delivered", "Accepted messages that reached the handset (ground truth)"),
    ("undelivered", "Accepted messages that did not reach the handset (ground truth)"),
    ("reports_sent", "Delivery reports published (the first time)"),
    ("reports_lost", "Delivery reports dropped on purpose (lost reports)"),
    ("reports_resent", "Publishes of a delivery report again, for want of an acknowledgement"),
    ("reports_acked", "Delivery reports acknowledged by a router"),
    ("reports_dropped", "Unacknowledged delivery reports given up: the store was full"),
    (
        "reports_restored",
        "Pending delivery reports taken over from the journal at start (never published)",
    ),
    (
        "reports_restored_unacked",
        "Published, unacknowledged delivery reports taken over from the journal at start",
    ),
)


class Ledger:
    """All carriers' ledgers in one process."""

    def __init__(self, carrier_ids: Iterable[str]) -> None:
        self.carriers: dict[str, CarrierLedger] = {c: CarrierLedger(c) for c in carrier_ids}

    def __getitem__(self, carrier_id: str) -> CarrierLedger:
        return self.carriers[carrier_id]

    def totals(self) -> dict[str, object]:
        total: dict[str, int] = {}
        rejected: dict[str, int] = {}
        for c in self.carriers.values():
            for key, value in c.summary().items():
                if isinstance(value, int):
                    total[key] = total.get(key, 0) + value
            for reason, n in c.rejected.items():
                rejected[reason] = rejected.get(reason, 0) + n
        return {**total, "rejected": dict(sorted(rejected.items()))}

    def summary(self) -> dict[str, object]:
        return {
            "totals": self.totals(),
            "carriers": {cid: c.summary() for cid, c in sorted(self.carriers.items())},
        }

    def write_json(self, path: Path) -> None:
        """Write the summary atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(self.summary()), indent=1) + b"\n")
        tmp.replace(path)


class LedgerCollector(Collector):
    """Prometheus view of a Ledger, read at scrape time (no per-message metric calls)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        carriers = list(self._ledger.carriers.values())
        for name, doc in _COUNTERS:
            family = CounterMetricFamily(f"supernet_carrier_{name}", doc, labels=["carrier"])
            for c in carriers:
                family.add_metric([c.carrier], getattr(c, name))
            yield family
        rejections = CounterMetricFamily(
            "supernet_carrier_rejections",
            "Submit items rejected, by reason",
            labels=["carrier", "reason"],
        )
        for c in carriers:
            for reason, n in sorted(c.rejected.items()):
                rejections.add_metric([c.carrier, reason], n)
        yield rejections
        online = GaugeMetricFamily(
            "supernet_carrier_online", "1 when the carrier is online", labels=["carrier"]
        )
        for c in carriers:
            online.add_metric([c.carrier], 1.0 if c.online else 0.0)
        yield online
        unacked = GaugeMetricFamily(
            "supernet_carrier_reports_unacked",
            "Delivery reports published and not acknowledged yet (held for re-sending)",
            labels=["carrier"],
        )
        for c in carriers:
            unacked.add_metric([c.carrier], c.reports_unacked)
        yield unacked


def register_metrics(registry: CollectorRegistry, ledger: Ledger) -> LedgerCollector:
    collector = LedgerCollector(ledger)
    registry.register(collector)
    return collector
