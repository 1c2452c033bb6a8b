"""A message's way through one worker, as a state machine driven by callbacks.

No task per message: the Kafka shell hands records in (``take``), the carrier transport
hands submit results, delivery reports and statuses in (``on_results``, ``on_reports``,
``on_status``), and the shell's timers call ``expire_submits`` and ``retry_held``. The
pipeline answers with attempt records, receipts and dead-letter records through a
``Sink``; when Kafka has made a request's outcome durable, the sink calls back and the
request's offset becomes committable. Everything here is synchronous and runs on the
event loop's thread.

A request's life, one module per stage:

- ``message``: the state of one request in flight (``Message``);
- ``intake``: decode (undecodable -> dead letter) -> a repeat of a known id? (its
  original outcome again, or resumed at the carrier its last attempt went to) ->
  expired? (failed 30036) -> routing decision (refused -> failed receipt with the
  decision's code; every affordable carrier at its cap or unavailable -> held, while
  intake pauses, until one can take it or the hold limit passes);
- ``submits``: the attempt is written ahead to the attempts log and, once Kafka has it,
  submitted -> accepted (``sent``) | rejected (next fallback, up to ``max_attempts``,
  else ``failed``) | no answer in time (asked once more, then the next fallback);
- ``outcomes``: the ``sent``/``failed`` receipt, the answer to a repeat, dead letters;
- ``reports``: later the carrier's delivery report, which carries everything needed,
  becomes a ``delivered`` or ``undelivered`` receipt on whichever worker receives it,
  and is acknowledged to its carrier process once that receipt is durable.

``state`` holds what the stages share; ``Pipeline`` is all of them in one object. The
request's ``from`` (sender id) goes to the carrier with every submit and into every
receipt.

No record stops the pipeline: an unexpected error while handling one message
dead-letters that message (reason ``internal``, the exception's class in a header),
counts it and goes on.
"""

from __future__ import annotations

from router.engine.pipeline.intake import HOLD_CODES, Intake
from router.engine.pipeline.message import Done, Message, Sink
from router.engine.pipeline.outcomes import dead_letter_reason
from router.engine.pipeline.reports import Reports
from router.engine.pipeline.submits import ASKS
from router.engine.transports.base import Submitter

__all__ = [
    "ASKS",
    "HOLD_CODES",
    "Done",
    "Message",
    "Pipeline",
    "Sink",
    "Submitter",
    "dead_letter_reason",
]


class Pipeline(Intake, Reports):
    """One worker's messages: built with its router, the carriers' specs, the transport's
    outbox (``link``), the sink, the offset tracker and the metrics (see ``State``)."""
