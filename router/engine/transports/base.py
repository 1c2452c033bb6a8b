"""What the engine needs from a carrier transport, and what a transport calls back.

A transport has two sides, so that neither it nor the pipeline is built half-wired:

- an outbox (a ``Submitter``), built first: the pipeline hands it submits and report
  acknowledgements synchronously, from its callbacks; the outbox batches and queues them;
- the ``Transport`` itself, built with the outbox and a ``TransportHandler`` (the
  pipeline): it publishes what the outbox queued and calls the handler back with what
  comes in (submit results, delivery reports, carrier statuses, directory changes).

So the worker builds the outbox, then the pipeline (given the outbox), then the transport
(given both): every collaborator is passed in at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from router.contracts import interconnect


class Submitter(Protocol):
    """The pipeline's way out: both calls queue and return at once."""

    def submit(self, carrier: str, item: interconnect.SubmitItem) -> None:
        """Queue ``item`` for ``carrier`` (``item.carrier`` names it)."""

    def ack_report(self, host: str, carrier: str, message_id: str) -> None:
        """Acknowledge a delivery report to carrier process ``host``: its receipt is
        durable, so the carrier side stops re-sending it."""


class TransportHandler(Protocol):
    """``carrier`` is the batch's sender: a carrier id, or a carrier process's id when the
    items name their own carriers."""

    def on_published(self, carrier: str, items: Sequence[interconnect.SubmitItem]) -> None:
        """The carrier side has these submits (its broker took them): their submit
        timeouts start now."""

    def on_results(self, carrier: str, results: Sequence[interconnect.SubmitResult]) -> None:
        """Carriers' answers to submits."""

    def on_reports(self, carrier: str, reports: Sequence[interconnect.DeliveryReport]) -> None:
        """Delivery reports, to be acknowledged (``Submitter.ack_report``) once durable."""

    def on_status(self, carrier: str, online: bool) -> None:
        """A carrier's announced status changed (or was read on connecting)."""

    def on_changed(self, carriers: Sequence[str]) -> None:
        """These carriers' host (re)announced itself, or the transport itself reconnected
        (``carriers`` empty): a submit asked before may never have reached them."""


class Transport(Protocol):
    """A running connection to the carriers. ``run`` until cancelled: it reconnects by
    itself (with ``router.support.backoff.Backoff``) when the carriers' side goes away."""

    async def run(self) -> None: ...

    async def wait_ready(self) -> None:
        """Return once connected (and subscribed) for the first time, or again."""

    def flush(self) -> None:
        """Queue everything the outbox still holds, for publishing now."""

    @property
    def queued(self) -> int:
        """Batches not yet taken by the carriers' side (queued or being published)."""

    async def wait_idle(self) -> None:
        """Return once nothing is queued or being published (``queued`` is 0)."""
