"""The one registry of status codes: every number the engine, the carriers and the tools
write, and what it means on a receipt of each status.

Codes reuse the well-known CPaaS numbers where one fits (21xxx: the request; 30xxx: the
carrier or the handset); ``39xxx`` are supernet's own, where no well-known number means
the same. A number may mean different things under different statuses, so a meaning is
always looked up with its scope: ``meaning(Scope.UNDELIVERED, 30006)``.

- ``Scope.FAILED``: on a ``failed`` receipt, why the message was not sent (the router
  refused it, the carriers tried refused or never answered, or it expired);
- ``Scope.REJECTED``: a carrier's submit rejection, as carried in a submit result and in a
  receipt's ``failovers``;
- ``Scope.UNDELIVERED``: on an ``undelivered`` receipt, the carrier's delivery report.

The README's table of codes, the demo's summary and ``supernet explain`` read ``TABLE``;
a test holds the README to it.
"""

from __future__ import annotations

import enum
from typing import Final


class Code(enum.IntEnum):
    INVALID_DESTINATION = 21211
    EMPTY_BODY = 21602
    NO_ROUTE = 21612
    BODY_TOO_LONG = 21617
    NO_ROUTE_WITHIN_PRICE = 21618
    QUEUE_OVERFLOW = 30001
    UNREACHABLE_HANDSET = 30003
    UNKNOWN_HANDSET = 30005
    LANDLINE_OR_UNREACHABLE_CARRIER = 30006
    FILTERED = 30007
    UNKNOWN_ERROR = 30008
    EXPIRED = 30036
    CARRIERS_UNAVAILABLE = 39001


class Scope(enum.StrEnum):
    FAILED = "failed"
    REJECTED = "rejected"
    UNDELIVERED = "undelivered"


TABLE: Final[dict[Scope, dict[Code, str]]] = {
    Scope.FAILED: {
        Code.INVALID_DESTINATION: (
            "invalid destination: not E.164, unknown country code, or a length not valid "
            "for the country"
        ),
        Code.EMPTY_BODY: "message body is empty",
        Code.NO_ROUTE: "no route: no carrier deck matches the destination",
        Code.BODY_TOO_LONG: "message body is longer than 1,600 characters",
        Code.NO_ROUTE_WITHIN_PRICE: (
            "no route within max_price: every carrier reaching the destination is dearer"
        ),
        Code.QUEUE_OVERFLOW: (
            "queue overflow: every affordable carrier stayed at its throughput cap"
        ),
        Code.CARRIERS_UNAVAILABLE: (
            "every affordable carrier stayed unavailable (breaker open or offline)"
        ),
        Code.UNKNOWN_ERROR: (
            "unknown error: the carriers tried failed the submit or did not answer in time"
        ),
        Code.EXPIRED: "validity period expired before a carrier accepted the message",
    },
    Scope.REJECTED: {
        Code.INVALID_DESTINATION: "the carrier refused the destination as invalid",
        Code.NO_ROUTE: "the carrier has no route to this destination",
        Code.QUEUE_OVERFLOW: "the carrier's throughput cap was exceeded",
        Code.UNKNOWN_ERROR: "the carrier failed the submit or did not answer in time",
    },
    Scope.UNDELIVERED: {
        Code.UNREACHABLE_HANDSET: "unreachable handset",
        Code.UNKNOWN_HANDSET: "unknown handset",
        Code.LANDLINE_OR_UNREACHABLE_CARRIER: "landline or unreachable carrier",
        Code.FILTERED: "filtered by the carrier",
    },
}

MESSAGE_FAULTS: Final = frozenset({Code.INVALID_DESTINATION, Code.NO_ROUTE})
"""Carrier rejections that are the message's fault (or the deck's), never the carrier's:
they never count against a carrier's breaker."""


def meaning(scope: Scope | str, code: int) -> str:
    """What ``code`` means under ``scope``; ``"unknown code <n>"`` for a number not in the
    registry (a carrier outside the simulator may send one)."""
    text = TABLE.get(Scope(scope), {}).get(code)  # type: ignore[call-overload]
    return text if text is not None else f"unknown code {code}"
