"""One request in flight on this worker (``Message``), and the ``Sink`` that makes its
records durable.

A ``Message`` is plain state that the pipeline's steps move along: which decision and
route it has, which attempt it is at and how often that attempt was asked, when it is
held until, whether its outcome was written, and the repeats of its id that wait for it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from router.contracts import wire
from router.core.decision import Decision
from router.core.policy import Route
from router.engine.attempts import AttemptRecord, Known

Done = Callable[[], None]


class Sink(Protocol):
    """Where records go (Kafka in the worker). ``on_durable`` runs once Kafka has them."""

    def attempt(self, record: AttemptRecord, partition: int, on_durable: Done | None) -> None: ...

    def receipt(self, receipt: wire.Receipt, on_durable: Done | None) -> None: ...

    def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        on_durable: Done,
    ) -> None: ...


class Message:
    """A request in flight on this worker."""

    __slots__ = (
        "answer_due",
        "asked_epoch",
        "asks",
        "attempt",
        "awaiting",
        "deadline_ms",
        "decision",
        "done",
        "doubt_until",
        "failovers",
        "first_submit_ms",
        "followers",
        "held_until",
        "hold_code",
        "key",
        "known",
        "last_ask",
        "offset",
        "partition_no",
        "raw",
        "raw_key",
        "request",
        "route",
        "submitted_at",
        "submitted_ms",
        "topic",
        "tried",
        "written",
    )

    def __init__(
        self,
        request: wire.SendRequest,
        done: Done,
        key: Hashable,
        topic: str,
        partition_no: int,
        offset: int,
        raw: bytes,
        raw_key: bytes | None,
    ) -> None:
        self.request = request
        self.done = done  # marks the Kafka offset finished; call once the outcome is durable
        self.key = key  # the offset tracker's key for the record's partition
        self.topic = topic
        self.partition_no = partition_no
        self.offset = offset
        self.raw = raw  # the record as read, for a dead letter should handling it fail
        self.raw_key = raw_key
        self.decision: Decision | None = None
        self.route: Route | None = None
        self.attempt = 0
        self.asks = 0  # times the current attempt was submitted
        self.last_ask = 0  # the number of its last ask (echoed in the carrier's result)
        self.asked_epoch = 0  # the link's epoch when it was last asked
        self.doubt_until = 0.0  # re-asks without an answer are not trusted until then
        self.awaiting = 0  # the attempt whose submit result is awaited; 0 if none
        self.submitted_at = 0.0  # monotonic, for the submit timeout and the histogram
        self.answer_due = 0.0  # monotonic: the last ask's answer is due (0: not published)
        self.submitted_ms = 0  # wall clock ms of the last ask (the submit's signed ts)
        self.first_submit_ms = 0  # wall clock ms of the first ask: the receipt's submitted_ts
        self.failovers: list[wire.FailedAttempt] = []
        self.tried: list[str] = []  # carriers that rejected it or never answered
        # its outcome has been handed to the sink, or its partition was revoked: either
        # way nothing more is done for it on this worker
        self.written = False
        self.followers: list[Done] = []  # repeats of its id, answered with its outcome
        self.known: Known | None = None
        self.held_until = 0.0  # monotonic deadline of a hold; 0 when never held
        self.hold_code = 0
        r = request
        self.deadline_ms = (
            r.created_at + round(r.validity_s * 1000)
            if r.validity_s is not None and r.created_at is not None
            else None
        )
