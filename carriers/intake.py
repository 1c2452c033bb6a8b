"""What a carrier process does with the messages its data connection receives: submit
batches (decided by the carriers' endpoints, their results and reports scheduled in the
outbox) and routers' report acknowledgements (releasing reports from the store).

Bad input is dropped with a warning, never raised: one router's malformed batch must not
stop the process. With a journal, every submit batch that accepted or repeated anything
is journalled before any of its results can be published, and every acknowledgement
batch that released reports is journalled too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import structlog

from carriers.endpoint import Endpoint
from carriers.journal import AcceptedItem, Journal, Key
from carriers.outbox import Outbox
from carriers.reports import ReportStore
from router.contracts import interconnect

log = structlog.get_logger("carriers.intake")


class Intake:
    """Submits and acknowledgements addressed to one carrier process (``host_id``)."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        reports: ReportStore,
        outbox: Outbox,
        *,
        host_id: str,
        clock: Callable[[], float],
        journal: Journal | None,
    ) -> None:
        self.endpoints = endpoints
        self.reports = reports
        self.outbox = outbox
        self.clock = clock
        self.journal = journal
        self.closed = False  # submits are ignored from now on; acknowledgements still count
        self.host_id = host_id
        self._ack_topic = interconnect.host_dlr_ack_topic(host_id)

    def on_message(self, topic: str, payload: object) -> None:
        """One message from the broker, on the host's submit or ``dlr-ack`` topic."""
        if topic == self._ack_topic:
            self._acks(payload)
        elif not self.closed:
            self._submits(topic, payload)

    def _submits(self, topic: str, payload: object) -> None:
        try:
            if not isinstance(payload, bytes | bytearray):
                raise TypeError("payload is not bytes")
            batch = interconnect.SUBMIT_BATCH.decode(bytes(payload))
            # answered on <reply_to>/<host id>: only a router's reply topic will do
            reply_to = interconnect.result_topic(batch.reply_to, self.host_id)
        except (ValueError, TypeError, msgspec.DecodeError) as e:
            log.warning("malformed submit dropped", topic=topic, error=str(e))
            return
        now = self.clock()
        wall_ms = time.time_ns() // 1_000_000
        endpoints, journal, schedule = self.endpoints, self.journal, self.outbox.schedule
        accepted: list[AcceptedItem] = []
        repeats: list[Key] = []
        for item in batch.items:
            carrier_id = item.carrier
            endpoint = endpoints.get(carrier_id)
            if endpoint is None:
                log.warning("submit for a carrier not hosted here dropped",
                            carrier=carrier_id, topic=topic)  # fmt: skip
                continue
            outcome = endpoint.submit(item, now, wall_ms)
            if outcome is None:
                continue
            result = outcome.result
            schedule(outcome.result_at, carrier_id, reply_to, result)
            if outcome.report is not None:
                schedule(outcome.report_at, carrier_id, None, outcome.report)
            if journal is not None and result.accepted:
                if result.duplicate:
                    repeats.append((carrier_id, item.id))
                else:
                    accepted.append(
                        AcceptedItem(
                            carrier_id,
                            item.id,
                            result.price,
                            wall_ms + round((outcome.result_at - now) * 1e3),
                            outcome.report,
                            wall_ms + round((outcome.report_at - now) * 1e3),
                        )
                    )
        # journalled before any of these results can be published
        if journal is not None and (accepted or repeats):
            journal.accepted(accepted, repeats)
        self.outbox.wake()

    def _acks(self, payload: object) -> None:
        try:
            if not isinstance(payload, bytes | bytearray):
                raise TypeError("payload is not bytes")
            batch = interconnect.REPORT_ACK_BATCH.decode(bytes(payload))
        except (TypeError, msgspec.DecodeError) as e:
            log.warning("malformed report acknowledgement dropped", error=str(e))
            return
        released, unknown = self.reports.ack(batch.acks)
        if released and self.journal is not None:
            self.journal.acked(released)
        if unknown:
            log.debug("acks for reports not held here ignored", router=batch.router, acks=unknown)
