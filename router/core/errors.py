"""One error hierarchy for the routing core, and the numeric codes it emits.

Codes reuse the well-known CPaaS numbers where one fits. A message that cannot be routed
is not an exception: it is a ``Decision`` carrying one of these codes. Exceptions are for
bad configuration (decks, network directories), raised while loading, never per message.
"""

from __future__ import annotations

INVALID_DESTINATION = 21211
"""The destination is not a valid E.164 number (or not a valid length for its country)."""
EMPTY_BODY = 21602
"""The message body is empty."""
NO_ROUTE = 21612
"""No carrier in the route table has a prefix matching the destination."""
BODY_TOO_LONG = 21617
"""The body is longer than 1,600 characters."""
NO_ROUTE_WITHIN_PRICE = 21618
"""Carriers reach the destination, but none at or below the request's max_price."""
QUEUE_OVERFLOW = 30001
"""Every affordable carrier is at its throughput cap (or waiting on a breaker probe)."""
CARRIER_UNAVAILABLE = 30006
"""Every affordable carrier has its circuit breaker open (failing or offline)."""

DESCRIPTIONS: dict[int, str] = {
    INVALID_DESTINATION: "invalid destination: not an E.164 number for a known country",
    EMPTY_BODY: "message body is empty",
    NO_ROUTE: "no route for this destination: no carrier deck matches it",
    BODY_TOO_LONG: "message body is longer than 1,600 characters",
    NO_ROUTE_WITHIN_PRICE: "no route within max_price: every carrier is dearer",
    QUEUE_OVERFLOW: "every affordable carrier is at its throughput cap; retry later",
    CARRIER_UNAVAILABLE: "every affordable carrier is unavailable (circuit breaker open)",
}


class RoutingError(Exception):
    """Base of every error the routing core raises; the message says what and where."""


class DeckError(RoutingError):
    """A rate deck row is malformed. Names the file, the line and what is wrong."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(f"{path}:{line}: {problem}")


class NetworkError(RoutingError):
    """A network directory cannot be loaded (missing deck, bad description)."""
