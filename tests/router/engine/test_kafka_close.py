"""Closing a Kafka client waits a bounded time (``kafka.let_go``): over TLS, aiokafka's
close can wait 30 s for a close_notify the broker never sends."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.engine import kafka


async def test_a_close_that_hangs_is_let_go_after_the_bound() -> None:
    never = asyncio.Event()
    began = time.monotonic()
    async with asyncio.timeout(5):  # fails here, not by hanging, if let_go waits it out
        await kafka.let_go(never.wait, limit_s=0.05)
    assert time.monotonic() - began < 1.0


async def test_a_close_that_ends_in_time_is_waited_for() -> None:
    done: list[str] = []

    async def close() -> None:
        await asyncio.sleep(0.02)
        done.append("closed")

    await kafka.let_go(close, limit_s=1.0)
    assert done == ["closed"]


async def test_an_error_of_the_close_is_not_swallowed() -> None:
    async def close() -> None:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await kafka.let_go(close)
