"""What carriers report besides submit results: delivery reports (each becomes a
``delivered`` or ``undelivered`` receipt on whichever worker receives it, and is
acknowledged to its carrier process once that receipt is durable), carriers' statuses and
their hosts' (re)announcements, which tell the submits whether a silence proves anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from router.contracts import interconnect, wire
from router.contracts.codes import Scope, meaning
from router.engine.pipeline.state import State

log = structlog.get_logger("router.engine.pipeline")


class Reports(State):
    def on_reports(self, host: str, reports: Sequence[interconnect.DeliveryReport]) -> None:
        """Delivery reports from carrier process ``host``: each becomes a receipt, and is
        acknowledged to ``host`` once Kafka has the receipt."""
        for rep in reports:
            try:
                self._report(host, rep)
            except Exception as e:
                self.metrics.internal_errors.inc()
                log.error("internal error handling a delivery report",
                          id=wire.quote(rep.id, 64), error=repr(e)[:300])  # fmt: skip

    def _report(self, host: str, rep: interconnect.DeliveryReport) -> None:
        m = self.metrics
        m.child(m.delivery_reports, rep.status).inc()
        if rep.resent:
            m.reports_resent.inc()
        code = "" if rep.code is None else str(rep.code)
        counter = m.child(m.receipts, rep.status, code)
        link = self.link

        def durable() -> None:
            counter.inc()
            link.ack_report(host, rep.carrier, rep.id)

        self.sink.receipt(
            wire.Receipt(
                id=rep.id,
                status=rep.status,
                ts=self.wall_ms(),
                account=rep.account,
                sender=rep.sender or None,
                error_code=rep.code,
                error_message=(
                    meaning(Scope.UNDELIVERED, rep.code) if rep.code is not None else None
                ),
                carrier=rep.carrier,
                route=rep.route,
                attempt=rep.attempt,
                segments=rep.segments,
                encoding=rep.encoding,
                # the router's own price for the attempt (signed in its submit, with
                # security on), not the one the report claims
                price=rep.quote * rep.segments,
                currency=rep.currency,
            ),
            durable,
        )
        spec = self.carriers.get(rep.carrier)
        if spec is not None and not rep.resent:  # a re-sent report may have counted already
            latency = (rep.ts - rep.submitted_ts) / 1000.0 if rep.submitted_ts else None
            self.router.health.delivery(spec, rep.country, rep.status == "delivered", latency,
                                        self.clock())  # fmt: skip

    def on_changed(self, carriers: Sequence[str]) -> None:
        if not carriers:
            self.link_epoch += 1
            return
        now = self.clock()
        for carrier in carriers:
            self.changed_at[carrier] = now

    def on_status(self, carrier: str, online: bool) -> None:
        if carrier not in self.carriers:
            return
        now = self.clock()
        self.changed_at[carrier] = now
        if online:
            self.offline.discard(carrier)
        else:
            self.offline.add(carrier)
        self.router.health.status(carrier, online, now)
        (log.debug if online else log.warning)("carrier status", carrier=carrier, online=online)
