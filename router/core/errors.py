"""One error hierarchy for the routing core.

A message that cannot be routed is not an exception: it is a ``Decision`` carrying a code
from ``router.contracts.codes``. Exceptions are for bad configuration (decks, network
directories), raised while loading, never per message.
"""

from __future__ import annotations


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
