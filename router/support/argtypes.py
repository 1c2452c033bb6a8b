"""Argument types shared by the command line's subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, which must be a number > 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text}")
        return value

    return parse
