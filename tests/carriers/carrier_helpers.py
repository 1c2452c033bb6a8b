"""Helpers for the carriers tests: carriers that behave exactly as a test needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec

from carriers.host import CarrierHost
from carriers.simulation import CarrierTruth
from router.contracts.network_file import CarrierSpec


def truth(carrier_id: str, **overrides: object) -> CarrierTruth:
    """A well-behaved carrier: fast, always delivers, never loses or fails."""
    base = CarrierTruth(
        id=carrier_id,
        seed=7,
        delivery_probability=1.0,
        submit_latency_ms=2.0,
        submit_failure_rate=0.0,
        report_delay_ms=20.0,
        report_delay_sigma=0.1,
        report_loss_rate=0.0,
        throughput_mps=10_000.0,
    )
    return msgspec.structs.replace(base, **overrides)


def spec(carrier_id: str, throughput_mps: float = 10_000.0) -> CarrierSpec:
    return CarrierSpec(
        id=carrier_id,
        name=carrier_id,
        kind="direct",
        countries=["GB"],
        deck=f"decks/{carrier_id}.csv",
        latency_ms=50.0,
        delivery_rate=0.99,
        throughput_mps=throughput_mps,
    )


@asynccontextmanager
async def serving(carrier_host: CarrierHost, wait_s: float) -> AsyncIterator[CarrierHost]:
    """Run ``carrier_host`` until the block ends: yields once every carrier is ready (or
    raises what made ``run`` fail), and stops it cleanly afterwards."""
    stop = asyncio.Event()
    task = asyncio.create_task(carrier_host.run(stop))
    try:
        async with asyncio.timeout(wait_s):
            ready = asyncio.create_task(carrier_host.ready.wait())
            await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
        yield carrier_host
    finally:
        stop.set()
        async with asyncio.timeout(wait_s):
            await task
