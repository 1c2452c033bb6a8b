"""Carrier endpoints against the real Mosquitto: round trips, throttling, repeats,
last-will of a killed process, scenario timing, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from carriers import network, scenario
from carriers.host import CarrierHost
from router.contracts import interconnect
from router.contracts.codes import Code
from tests.carriers.carrier_helpers import serving, truth
from tests.carriers.conftest import SmallNetwork

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # generous: only for waiting, never asserted


@asynccontextmanager
async def running(
    directory: Path,
    host: str,
    port: int,
    scen: scenario.Scenario | None = None,
    only: str | None = None,
) -> AsyncIterator[CarrierHost]:
    endpoints, ledger = network.load_endpoints(directory, only=only, now=time.monotonic())
    carrier_host = CarrierHost(
        endpoints,
        ledger,
        mqtt_host=host,
        mqtt_port=port,
        host_id=f"test-{os.getpid()}",
        scenario=scen,
    )
    async with serving(carrier_host, WAIT_S) as served:
        yield served


@asynccontextmanager
async def client(host: str, port: int, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(host, port) as c:
        for topic in topics:
            await c.subscribe(topic, qos=1)
        yield c


def own_reports(uid: str) -> str:
    """A shared subscription to this test process's carrier host only: other carrier
    processes on the same broker (other tests, a demo) publish reports too."""
    return f"$share/{uid}/{interconnect.host_dlr_topic(f'test-{os.getpid()}')}"


def items(n: int, start: int = 0, to: str = "+447700900123") -> list[interconnect.SubmitItem]:
    return [
        interconnect.SubmitItem(id=f"m{i}", to=to, account="AC1", segments=1, price=0.01)
        for i in range(start, start + n)
    ]


async def collect(
    c: aiomqtt.Client,
    done: Callable[[list[interconnect.SubmitResult], list[interconnect.DeliveryReport]], bool],
) -> tuple[list[interconnect.SubmitResult], list[interconnect.DeliveryReport]]:
    results: list[interconnect.SubmitResult] = []
    reports: list[interconnect.DeliveryReport] = []
    async with asyncio.timeout(WAIT_S):
        async for m in c.messages:
            assert isinstance(m.payload, bytes)
            if m.topic.value.endswith("/dlr"):
                reports.extend(interconnect.REPORT_BATCH.decode(m.payload).reports)
            else:
                results.extend(interconnect.RESULT_BATCH.decode(m.payload).results)
            if done(results, reports):
                break
    return results, reports


async def submit(
    c: aiomqtt.Client, carrier: str, reply_to: str, batch: list[interconnect.SubmitItem]
) -> None:
    payload = interconnect.SUBMIT_BATCH.encode(interconnect.SubmitBatch(carrier, reply_to, batch))
    await c.publish(interconnect.submit_topic(carrier), payload, qos=1)


async def test_submit_ack_report_round_trip(
    small_network: SmallNetwork, uid: str, mqtt_host: str, mqtt_port: int
) -> None:
    cid = f"{uid}-a"
    directory = small_network([truth(cid)])
    reply = f"test/{uid}/results"
    async with (
        running(directory, mqtt_host, mqtt_port) as host,
        client(
            mqtt_host,
            mqtt_port,
            reply,
            own_reports(uid),
        ) as c,
    ):
        await submit(c, cid, reply, items(300))  # more than one batch each way
        results, reports = await collect(c, lambda r, d: len(r) >= 300 and len(d) >= 300)
    assert sorted(r.id for r in results) == sorted(f"m{i}" for i in range(300))
    assert all(r.accepted and r.price == 0.01 for r in results)
    assert sorted(r.id for r in reports) == sorted(f"m{i}" for i in range(300))
    assert {(r.carrier, r.account, r.status, r.segments) for r in reports} == {
        (cid, "AC1", "delivered", 1)
    }
    led = host.ledger[cid]
    assert (led.accepted, led.delivered, led.reports_sent, led.reports_pending) == (
        300,
        300,
        300,
        0,
    )


async def test_host_directory_and_one_batch_for_many_carriers(
    small_network: SmallNetwork, uid: str, mqtt_host: str, mqtt_port: int
) -> None:
    """A process announces its carriers (retained) and takes one submit batch for all of
    them on its host topic; results and reports name their carriers."""
    cids = [f"{uid}-h{i}" for i in range(3)]
    directory = small_network([truth(c) for c in cids])
    reply = f"test/{uid}/results"
    host_id = f"test-{os.getpid()}"
    async with running(directory, mqtt_host, mqtt_port) as host:
        async with client(mqtt_host, mqtt_port, interconnect.directory_topic(host_id)) as d:
            async with asyncio.timeout(WAIT_S):
                message = await anext(aiter(d.messages))
        assert isinstance(message.payload, bytes)
        announced = interconnect.DIRECTORY.decode(message.payload)
        assert announced.host == host_id
        assert set(cids) <= set(announced.carriers)
        batch = [
            msgspec.structs.replace(item, carrier=cids[i % 3]) for i, item in enumerate(items(30))
        ]
        async with client(
            mqtt_host,
            mqtt_port,
            reply,
            own_reports(uid),
        ) as c:
            payload = interconnect.SUBMIT_BATCH.encode(interconnect.SubmitBatch("", reply, batch))
            await c.publish(interconnect.host_submit_topic(host_id), payload, qos=1)
            results, reports = await collect(c, lambda r, d: len(r) >= 30 and len(d) >= 30)
    assert {(r.id, r.carrier) for r in results} == {(i.id, i.carrier) for i in batch}
    assert {(r.id, r.carrier) for r in reports} == {(i.id, i.carrier) for i in batch}
    assert [host.ledger[c].accepted for c in cids] == [10, 10, 10]


async def test_throttling_past_the_cap_and_unknown_destination(
    small_network: SmallNetwork, uid: str, mqtt_host: str, mqtt_port: int
) -> None:
    cid = f"{uid}-slow"
    directory = small_network([truth(cid, throughput_mps=5.0)])
    reply = f"test/{uid}/results"
    async with (
        running(directory, mqtt_host, mqtt_port) as host,
        client(mqtt_host, mqtt_port, reply) as c,
    ):
        await submit(c, cid, reply, [*items(40), *items(1, 40, to="+33612345678")])
        results, _ = await collect(c, lambda r, d: len(r) >= 41)
    codes = [r.code for r in results]
    assert codes.count(Code.NO_ROUTE) == 1
    assert codes.count(Code.QUEUE_OVERFLOW) >= 1
    assert codes.count(None) >= 5
    assert host.ledger[cid].rejected["throttled"] == codes.count(Code.QUEUE_OVERFLOW)


async def test_repeated_ids_are_acknowledged_and_not_delivered_twice(
    small_network: SmallNetwork, uid: str, mqtt_host: str, mqtt_port: int
) -> None:
    cid = f"{uid}-r"
    directory = small_network([truth(cid)])
    reply = f"test/{uid}/results"
    async with (
        running(directory, mqtt_host, mqtt_port) as host,
        client(
            mqtt_host, mqtt_port, reply, interconnect.host_dlr_topic(f"test-{os.getpid()}")
        ) as c,
    ):
        await submit(c, cid, reply, items(10))
        first, reports = await collect(c, lambda r, d: len(r) >= 10 and len(d) >= 10)
        assert sorted(r.id for r in reports) == sorted(r.id for r in first)
        await submit(c, cid, reply, items(10))  # the same ids again (a redelivery)
        await submit(c, cid, reply, items(1, 10))  # and one new message, as a marker
        again, more = await collect(c, lambda r, d: len(r) >= 11 and len(d) >= 1)
    assert all(r.duplicate and r.accepted for r in again if r.id != "m10")
    assert [r.id for r in more] == ["m10"]  # the repeats produced no report
    led = host.ledger[cid]
    assert (led.accepted, led.repeats, led.delivered) == (11, 10, 11)


async def test_killed_carrier_process_is_seen_offline(
    small_network: SmallNetwork, uid: str, mqtt_host: str, mqtt_port: int, tmp_path: Path
) -> None:
    cids = [f"{uid}-k1", f"{uid}-k2"]
    directory = small_network([truth(c) for c in cids])
    args = [
        sys.executable, "-m", "router", "carriers", "--network", str(directory),
        "--mqtt-host", mqtt_host, "--mqtt-port", str(mqtt_port),
        "--ledger", str(tmp_path / "l.json"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with client(mqtt_host, mqtt_port, *(interconnect.status_topic(c) for c in cids)) as c:
            seen: dict[str, list[str]] = {cid: [] for cid in cids}
            killed = False
            async with asyncio.timeout(WAIT_S):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    seen[interconnect.carrier_of(m.topic.value)].append(
                        interconnect.decode_status(m.payload)
                    )
                    if not killed and all(s[-1:] == ["online"] for s in seen.values()):
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                    if killed and all(s[-1:] == ["offline"] for s in seen.values()):
                        break
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for statuses in seen.values():
        assert statuses[-2:] == ["online", "offline"]
    assert not (tmp_path / "l.json").exists()  # it died: no clean shutdown happened


async def test_sigterm_stops_cleanly_with_ledger_and_offline_status(
    small_network: SmallNetwork, uid: str, mqtt_host: str, mqtt_port: int, tmp_path: Path
) -> None:
    cid = f"{uid}-t"
    directory = small_network([truth(cid)])
    ledger_path = tmp_path / "ledger.json"
    args = [
        sys.executable, "-m", "router", "carriers", "--network", str(directory),
        "--mqtt-host", mqtt_host, "--mqtt-port", str(mqtt_port), "--ledger", str(ledger_path),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.DEVNULL)
    try:
        reply = f"test/{uid}/results"
        async with client(mqtt_host, mqtt_port, interconnect.status_topic(cid), reply) as c:
            statuses: list[str] = []
            async with asyncio.timeout(WAIT_S):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    if m.topic.value == reply:  # answered: now stop it
                        proc.send_signal(signal.SIGTERM)
                        continue
                    statuses.append(interconnect.decode_status(m.payload))
                    if statuses == ["online"]:
                        await submit(c, cid, reply, items(3))
                    elif statuses[-1] == "offline":
                        break
        async with asyncio.timeout(WAIT_S):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    data = json.loads(ledger_path.read_text())
    assert data["carriers"][cid]["accepted"] == 3
    assert data["carriers"][cid]["submits"] == 3


async def test_scenario_outage_and_timing(
    small_network: SmallNetwork, uid: str, mqtt_host: str, mqtt_port: int
) -> None:
    cids = [f"{uid}-s1", f"{uid}-s2"]
    directory = small_network([truth(c) for c in cids])
    scen = scenario.parse(
        f"""
        [[events]]
        kind = "offline"
        at = 0.3
        carriers = "{cids[0]}"
        duration = 0.5
        [[events]]
        kind = "offline"
        at = 0.4
        carriers = "{cids[1]}"
        """
    )
    reply = f"test/{uid}/results"
    async with client(
        mqtt_host, mqtt_port, *(interconnect.status_topic(c) for c in cids), reply
    ) as c:
        seen: list[tuple[str, str, float]] = []
        start = time.monotonic()  # before the host starts its scenario clock
        async with running(directory, mqtt_host, mqtt_port, scen) as host:
            async with asyncio.timeout(WAIT_S):
                async for m in c.messages:
                    if m.topic.value == reply:
                        continue
                    assert isinstance(m.payload, bytes)
                    cid = interconnect.carrier_of(m.topic.value)
                    seen.append(
                        (cid, interconnect.decode_status(m.payload), time.monotonic() - start)
                    )
                    if [s for c_, s, _ in seen if c_ == cids[0]][-3:] == [
                        "online",
                        "offline",
                        "online",
                    ] and ([s for c_, s, _ in seen if c_ == cids[1]][-1:] == ["offline"]):
                        break
            # s2 stays offline: it takes submits but never answers them
            await submit(c, cids[1], reply, items(5))
            async with asyncio.timeout(WAIT_S):
                while host.ledger[cids[1]].ignored_offline < 5:  # noqa: ASYNC110 (no event to wait on)
                    await asyncio.sleep(0.01)
            assert host.ledger[cids[1]].accepted == 0
    s1 = [(s, t) for c_, s, t in seen if c_ == cids[0]]
    # lower bounds only: a step can never come early, however busy the machine is
    assert [s for s, _ in s1][-3:] == ["online", "offline", "online"]
    assert s1[-2][1] >= 0.3
    assert s1[-1][1] >= 0.3 + 0.5
    assert next(t for c_, s, t in seen if c_ == cids[1] and s == "offline") >= 0.4


async def test_whole_seed_network_is_hostable(
    network_dir: Path, mqtt_host: str, mqtt_port: int
) -> None:
    """Every carrier of the generated network (~1,570) comes online in one process."""
    async with running(network_dir, mqtt_host, mqtt_port) as host:
        assert len(host.endpoints) > 1500
        assert all(e.ledger.online for e in host.endpoints.values())
