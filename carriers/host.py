"""One process hosting many carriers as MQTT clients against Mosquitto.

`CarrierHost` puts the parts together and gives them one lifecycle (``run`` until
``stop``, then a clean shutdown, each step under ``SHUTDOWN_DEADLINE_S``):

- ``carriers.connections``: the process's one MQTT connection (one identity), for all
  the traffic and the retained statuses, with the last-will ``offline`` for the process;
  it reconnects with backoff when the broker goes away;
- ``carriers.intake``: submit batches decided by the carriers' endpoints, and routers'
  report acknowledgements;
- ``carriers.outbox``: results and reports in one heap by due time, batched per topic onto
  a bounded publish queue;
- ``carriers.reports``: the ``ReportStore``, which holds a report from its first
  publication until a router acknowledges it on the host's ``dlr-ack`` topic, and has it
  published again (``resent`` + 1) every ``report_resend_s`` meanwhile, through the same
  batches. The store is bounded (``max_unacked_reports``; past it the oldest report is
  given up and counted as dropped). An offline carrier holds its reports, re-sends
  included, until it is back.

Endpoints (idempotency memory, token buckets, ledger), the heap and the report store live
on across reconnects.

Journal: with a ``carriers.journal.Journal``, the host takes over the state it holds
(idempotency memory, pending and unacknowledged reports) at construction and appends one
record per submit batch, published report batch and acknowledgement batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
import structlog

from carriers import scenario as scenario_mod
from carriers.connections import HostConnection, first_of
from carriers.endpoint import Endpoint
from carriers.intake import Intake
from carriers.journal import Journal, Replay
from carriers.ledger import Ledger
from carriers.outbox import Outbox
from carriers.reports import MAX_UNACKED_REPORTS, ReportStore
from router.contracts import interconnect
from router.support.credentials import MqttAccess

log = structlog.get_logger("carriers.host")

SHUTDOWN_DEADLINE_S = 10.0


class CarrierHost:
    """Runs endpoints against a broker until ``stop`` is set; then shuts down cleanly."""

    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        ledger: Ledger,
        *,
        mqtt: MqttAccess,
        host_id: str,
        scenario: scenario_mod.Scenario | None = None,
        clock: Callable[[], float] = time.monotonic,
        report_resend_s: float = interconnect.REPORT_RESEND_S,
        max_unacked_reports: int = MAX_UNACKED_REPORTS,
        journal: Journal | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.ledger = ledger
        self.mqtt = mqtt
        self.host_id = host_id
        self.scenario = scenario
        self.clock = clock
        self.journal = journal
        self.reports = ReportStore(ledger, resend_s=report_resend_s, limit=max_unacked_reports)
        self.outbox = Outbox(endpoints, self.reports, host_id=host_id, clock=clock, journal=journal)
        self.intake = intake = Intake(
            endpoints, self.reports, self.outbox, host_id=host_id, clock=clock, journal=journal
        )
        self.connection = HostConnection(
            endpoints, intake, self.outbox, access=mqtt, host_id=host_id, clock=clock
        )
        self.ready = self.connection.ready  # subscribed and announced (the first time)
        if journal is not None:
            self._restore(journal.restored)

    def status_changed(self, carrier_id: str) -> None:
        """A carrier's status may have changed (a scenario step): publish it if it did."""
        self.connection.status_changed()

    # ---- lifecycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            connection = tg.create_task(self.connection.run())
            pump = tg.create_task(self.outbox.pump())
            await first_of(self.ready, stop)
            runner = None
            if self.scenario is not None and self.ready.is_set():
                runner = tg.create_task(self._run_scenario())

            await stop.wait()
            log.info("carriers stopping", host=self.host_id)
            self.intake.closed = True  # acknowledgements are still taken while draining
            if runner is not None:
                runner.cancel()
            await self._shut_down(pump, connection)
        pending = sum(c.reports_pending for c in self.ledger.carriers.values())
        log.info(
            "carriers stopped",
            host=self.host_id,
            reports_pending=pending,
            reports_unacked=len(self.reports),
        )

    async def _shut_down(self, pump: asyncio.Task[None], connection: asyncio.Task[None]) -> None:
        """Publish what is due, then clear the directory and say offline: each step under
        its own deadline, and the next one taken even if it passes."""
        try:
            async with asyncio.timeout(SHUTDOWN_DEADLINE_S):
                self.outbox.drain()  # flush what is due now, then the pump ends
                await pump
                await self.outbox.join()
        except TimeoutError:
            unsent = self.outbox.unsent
            log.warning("shutdown deadline passed; unsent batches dropped", batches=unsent)
            pump.cancel()
        self.connection.stop()  # clear the directory, host offline, disconnect
        try:
            async with asyncio.timeout(SHUTDOWN_DEADLINE_S):
                await connection
        except TimeoutError:
            log.warning("shutdown deadline passed; the directory was not cleared")

    def _restore(self, restored: Replay) -> None:
        """Take over what the journal says an earlier run held: the idempotency memory,
        the reports not published yet (due when they were due, or now) and those published
        but not acknowledged (published again now, as re-sends)."""
        now = self.clock()
        wall_ms = time.time_ns() // 1_000_000
        schedule, endpoints, ledger = self.outbox.schedule, self.endpoints, self.ledger
        other = pending = unacked = 0
        for key, item in restored.accepted.items():
            endpoint = endpoints.get(item.carrier)
            if endpoint is None:
                other += 1
                continue
            endpoint.restore_accepted(item.id, item.price, now + (item.result_ms - wall_ms) / 1e3)
            report = item.report
            if report is None or key in restored.acked or key in restored.dropped:
                continue
            published = restored.published.get(key)
            if published is None:
                ledger[item.carrier].reports_restored += 1
                at = now + max(0, item.report_due_ms - wall_ms) / 1e3
                pending += 1
            else:
                report = msgspec.structs.replace(report, resent=published.resent + 1)
                self.reports.restore(report)
                at = now
                unacked += 1
            schedule(at, item.carrier, None, report)
        dropped = self.reports.take_dropped()
        if dropped and self.journal is not None:
            self.journal.dropped(dropped)
        log.info(
            "journal restored",
            accepted=len(restored.accepted) - other,
            reports_pending=pending,
            reports_unacked=unacked,
            reports_dropped=len(dropped),
            other_carriers=other,
            damaged_bytes=restored.damaged_bytes,
        )

    # ---- scenario -------------------------------------------------------------------------

    async def _run_scenario(self) -> None:
        assert self.scenario is not None
        start = self.clock()
        endpoints = list(self.endpoints.values())
        for step in scenario_mod.timeline(self.scenario):
            delay = start + step.at - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            changed = scenario_mod.apply(step, endpoints)
            log.info("scenario step", step=step.describe(), at_s=step.at, carriers=len(changed))
            for endpoint in changed:
                self.status_changed(endpoint.id)
