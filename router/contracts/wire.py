"""The customer-facing wire: send requests in, receipts out, dead-letter headers.

One Decoder and one Encoder per type, built once. Decoding is strict about types
(``"max_price": "5"`` is an error) and ranges (``validity_s`` up to a year, ``created_at``
up to 2**53, ``max_price`` up to 1,000 USD, ``account`` 128 and ``from`` 64 characters),
and ignores unknown fields, so producers may add their own. A record that fails decoding
is dead-lettered unchanged; ``to`` and ``body`` are checked by the router, so that a bad
number or body gets a ``failed`` receipt with its code. Validation happens here, at the
boundary; code behind it trusts the types.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

MessageClass = Literal["otp", "transactional", "marketing"]
Status = Literal["sent", "failed", "delivered", "undelivered"]
Route = Literal["direct", "aggregator"]

MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MAX_VALIDITY_S: Final = 366 * 24 * 3600
"""A year: a longer ``validity_s`` is refused at decoding (the record is dead-lettered)."""
MAX_CREATED_AT: Final = 2**53 - 1
"""The largest ``created_at`` (ms) taken; also the largest integer a JSON double keeps."""


class SendRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """A send request on ``sms.requests`` (JSON; key: the destination number)."""

    id: MessageId
    to: str  # validated by the router (21211), not here: a bad number gets a receipt
    body: str  # likewise (21602 empty, 21617 too long)
    account: Annotated[str, msgspec.Meta(max_length=128)] = ""
    sender: Annotated[str, msgspec.Meta(max_length=64)] | None = msgspec.field(
        default=None, name="from"
    )
    cls: MessageClass = msgspec.field(default="transactional", name="class")
    max_price: Annotated[float, msgspec.Meta(ge=0, le=1000)] | None = None  # USD per message
    validity_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_VALIDITY_S)] | None = None
    # ms since the Unix epoch, set by the producer
    created_at: Annotated[int, msgspec.Meta(ge=0, le=MAX_CREATED_AT)] | None = None


class FailedAttempt(msgspec.Struct, frozen=True):
    """An earlier attempt of the same message that a carrier rejected or timed out."""

    carrier: str
    attempt: int
    code: int


class Receipt(msgspec.Struct, frozen=True):
    """A status event on ``sms.receipts`` (JSON; key: the message id).

    ``price`` is USD for the whole message (price per segment x segments); ``failovers``
    lists the attempts before ``attempt`` that failed, so every attempt is visible.
    """

    id: str
    status: Status
    ts: int  # ms since the Unix epoch
    account: str = ""
    sender: str | None = msgspec.field(default=None, name="from")  # the request's ``from``
    error_code: int | None = None
    error_message: str | None = None
    carrier: str | None = None
    route: Route | None = None
    attempt: int = 0
    segments: int = 0
    encoding: str | None = None
    price: float | None = None
    currency: str = "USD"
    failovers: list[FailedAttempt] = msgspec.field(default_factory=list)
    # ``sent`` only: ms since the Unix epoch when the worker first handed the message to a
    # carrier link (its first attempt's first ask: the engine's own time ends there, and
    # failovers are carriers' time); ``ts`` is when the acceptance came back.
    submitted_ts: int | None = None


REQUEST_DECODER: Final = msgspec.json.Decoder(SendRequest)
RECEIPT_DECODER: Final = msgspec.json.Decoder(Receipt)
ENCODER: Final = msgspec.json.Encoder()

# Dead-letter records carry the undecodable bytes unchanged, with these headers.
DLQ_REASON: Final = "supernet-reason"
DLQ_TOPIC: Final = "supernet-source-topic"
DLQ_PARTITION: Final = "supernet-source-partition"
DLQ_OFFSET: Final = "supernet-source-offset"
DLQ_ERROR: Final = "supernet-error-class"
"""Only on ``internal`` dead letters: the class of the exception that handling met."""


MAX_QUOTE: Final = 200
"""Characters of bad input quoted in an error message or header, at most."""


def quote(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` cut to ``limit`` characters (marked when cut): error messages stay small,
    whatever a producer sent."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def decode_request(raw: bytes) -> SendRequest:
    """Decode one request; raises ``msgspec.DecodeError`` (``UnicodeDecodeError`` for bad
    UTF-8 inside a string), both ValueErrors with a readable reason."""
    return REQUEST_DECODER.decode(raw)
