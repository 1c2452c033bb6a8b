"""Delivery reports are signed attempts (``router.engine.transports.tokens``), against a
real worker and real carriers: a report the fleet did not sign for the carrier process
that sends it never becomes a receipt, and a genuine report sent again is not a second
receipt.

The forgeries come from the two places a forger could publish: as a carrier process of
its own (a ``carriers`` identity provisioned for the test, which the broker lets publish
only on its own topics), and as the real carrier process's identity once that process is
gone (Mosquitto makes the username the client id, so connecting as it while it runs
would disconnect it; SIGKILL leaves its retained directory, so the worker still counts
its carriers as that process's). Each refusal shows in the worker's
``supernet_interconnect_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from router.contracts import interconnect
from router.support.infra_settings import InfraSettings
from tests.integration.harness import (
    identity,
    mobile_numbers,
    mqtt_client,
    outcomes,
    read_topic,
    receipts,
    requests,
    unique,
)
from tests.integration.test_worker import Stack, reports_of
from tests.ports import free_port

pytestmark = pytest.mark.integration

REFUSED = re.compile(r'^supernet_interconnect_refused_total\{reason="(\w+)"\} ([0-9.e+]+)$', re.M)


@pytest.fixture(autouse=True)
def secured(infra: InfraSettings) -> None:
    if not infra.security:
        pytest.skip("reports are signed only with security on")


@pytest.fixture
async def stack(infra: InfraSettings, network: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(infra, network, tmp_path)
    try:
        yield await s.start()
    finally:
        await s.close()


def refused(port: int) -> Counter[str]:
    """The worker's refused interconnect traffic, by reason (from its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return Counter({k: int(float(v)) for k, v in REFUSED.findall(text)})


async def report_receipts(stack: Stack, ids: set[str]) -> Counter[tuple[str, str]]:
    """(id, status) of every delivery receipt of ``ids`` in the receipts topic now."""
    rs = receipts(await read_topic(stack.admin, stack.receipts_topic, idle=1))
    return Counter((r.id, r.status) for r in reports_of(rs, ids))


async def until_reports_settle(stack: Stack, ids: set[str], limit_s: float = 90
                               ) -> Counter[tuple[str, str]]:  # fmt: skip
    """Read the report receipts until their count stops growing (4 reads in a row)."""
    deadline = time.monotonic() + limit_s
    last, same = -1, 0
    while True:
        got = await report_receipts(stack, ids)
        n = sum(got.values())
        same = same + 1 if n == last else 0
        if (n and same >= 4) or time.monotonic() > deadline:
            return got
        last = n
        await asyncio.sleep(1)


async def tap(client: aiomqtt.Client, into: list[interconnect.DeliveryReportBatch]) -> None:
    async for m in client.messages:
        assert isinstance(m.payload, bytes)
        into.append(interconnect.REPORT_BATCH.decode(m.payload))


async def publish(access_name: str, infra: InfraSettings, payloads: list[bytes]) -> None:
    """Publish ``payloads`` (QoS 1) on the dlr topic of carrier process ``access_name``,
    connected as that identity (its password from the store)."""
    access = infra.secrets().mqtt(infra.host, infra.mqtt_port, access_name)
    async with aiomqtt.Client(**access.client_kwargs()) as client:
        for payload in payloads:
            await client.publish(interconnect.host_dlr_topic(access_name), payload, qos=1)


def forged(rep: interconnect.DeliveryReport, host_carrier: str, **change: object
           ) -> interconnect.DeliveryReport:  # fmt: skip
    """``rep`` changed, with a token of the forger's making unless ``token`` is given."""
    return msgspec.structs.replace(
        rep, **({"carrier": host_carrier, "token": os.urandom(16)} | change)
    )


async def test_forged_and_replayed_reports_never_become_receipts(
    stack: Stack, network: Path, infra: InfraSettings
) -> None:
    host = f"carriers-{stack.tag}"
    carriers = await stack.carriers()
    port = free_port()
    worker = await stack.worker(f"w-{stack.tag}", metrics_port=port)

    # The genuine reports, as the real process publishes them (an admin may read them).
    genuine: list[interconnect.DeliveryReportBatch] = []
    watcher = identity(infra, "admin", unique("test-dlr-tap"))
    async with mqtt_client(watcher, interconnect.host_dlr_topic(host)) as client:
        tapping = asyncio.create_task(tap(client, genuine))
        ids = await stack.send(requests(mobile_numbers(network, 400, seed=23), f"a-{stack.tag}"))
        sent = {
            mid: v[0] for mid, v in outcomes(await stack.outcomes_for(ids)).items()
            if v[0].status == "sent"
        }  # fmt: skip
        await until_reports_settle(stack, ids)
        carriers.signal(signal.SIGKILL)  # its directory stays: its carriers are still its own
        assert await carriers.wait(10) == -signal.SIGKILL
        tapping.cancel()
    before = await until_reports_settle(stack, ids)
    assert before, "delivery reports should have become receipts"
    assert max(before.values()) == 1
    # A batch whose every report is a receipt already: it is replayed unchanged.
    replay = next(
        b for b in genuine if b.reports and all((r.id, r.status) in before for r in b.reports)
    )
    base = replay.reports[0]
    target = next(mid for mid in sent if (mid, "delivered") in before)
    never = f"never-{stack.tag}"
    existing = forged(base, base.carrier, id=target, status="undelivered", code=30003)
    invented = forged(base, base.carrier, id=never, status="delivered")
    altered = forged(base, base.carrier, quote=base.quote / 100, token=base.token)  # re-priced
    counted = refused(port)

    # 1. As a carrier process of its own: it hosts none of these carriers.
    forger = identity(infra, "carriers", unique("forger"))
    batch = interconnect.DeliveryReportBatch(forger.username, [existing, invented])
    await publish(forger.username, infra, [interconnect.REPORT_BATCH.encode(batch)])
    # 2. As the real process, now that it is gone: forged tokens, an altered report, and
    # the genuine batch again, byte for byte.
    batch = interconnect.DeliveryReportBatch(host, [existing, invented, altered])
    await publish(host, infra, [interconnect.REPORT_BATCH.encode(batch),
                                interconnect.REPORT_BATCH.encode(replay)])  # fmt: skip

    want = {"foreign": 2, "forged": 3, "repeat": len(replay.reports)}
    deadline = time.monotonic() + 30
    while True:
        now = refused(port)
        delta = {k: now[k] - counted[k] for k in want}
        if all(delta[k] >= n for k, n in want.items()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert delta == want, f"refused since the forgeries: {delta}, all: {dict(now)}"
    assert '"reason": "forged"' in worker.text()

    # Not one receipt more: no forged status, no invented id, the replay not twice.
    after = await until_reports_settle(stack, ids | {never})
    assert after == before
    assert not [k for k in after if k[0] == never]
    assert (target, "undelivered") not in after
    assert all(after[r.id, r.status] == 1 for r in replay.reports)
    assert worker.running()
