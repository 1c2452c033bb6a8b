"""Carrier endpoints against the real Mosquitto: round trips, throttling, repeats,
last-will of a killed process, scenario timing, clean stop. The carrier process is its
own MQTT identity (role ``carriers``, named by its host id); the test client plays a
router (an admin identity): it submits on the host's topic with a router's reply_to and
reads the answers on that router's results topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from carriers import network, scenario
from carriers.host import CarrierHost
from router.contracts import interconnect
from router.contracts.codes import Code
from router.support.credentials import MqttAccess
from router.support.infra_settings import InfraSettings
from tests.carriers.carrier_helpers import serving, truth
from tests.carriers.conftest import SmallNetwork
from tests.conftest import MqttIdentity
from tests.integration.harness import carriers_args, mqtt_client, unique

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # generous: only for waiting, never asserted


@dataclass(frozen=True)
class Ids:
    """One test's names: its carrier process (``host``, an identity of role ``carriers``)
    and the router the test client plays (``router``: its reply_to and results topics)."""

    host: str
    host_access: MqttAccess
    router: str

    @property
    def reply_to(self) -> str:
        return interconnect.reply_topic(self.router)

    @property
    def results(self) -> str:
        return interconnect.results_subscription(self.router)

    @property
    def reports(self) -> str:
        """This test's carrier process's reports only: other carrier processes on the
        same broker (other tests, a demo) publish reports too."""
        return interconnect.host_dlr_topic(self.host)


@pytest.fixture
def ids(uid: str, mqtt_identity: MqttIdentity) -> Ids:
    host = f"test-{uid}"
    return Ids(host, mqtt_identity("carriers", host), f"test-router-{uid}")


@pytest.fixture
def admin(mqtt_identity: MqttIdentity) -> Callable[[], MqttAccess]:
    """A fresh admin identity per call: every connection needs its own."""
    return lambda: mqtt_identity("admin", unique("test-client"))


@asynccontextmanager
async def running(
    directory: Path,
    ids: Ids,
    scen: scenario.Scenario | None = None,
    only: str | None = None,
) -> AsyncIterator[CarrierHost]:
    endpoints, ledger = network.load_endpoints(directory, only=only, now=time.monotonic())
    carrier_host = CarrierHost(
        endpoints, ledger, mqtt=ids.host_access, host_id=ids.host, scenario=scen
    )
    async with serving(carrier_host, WAIT_S) as served:
        yield served


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
    c: aiomqtt.Client, ids: Ids, carrier: str, batch: list[interconnect.SubmitItem]
) -> None:
    """``batch`` for ``carrier``, on its process's submit topic (items name the carrier)."""
    items = [msgspec.structs.replace(item, carrier=carrier) for item in batch]
    payload = interconnect.SUBMIT_BATCH.encode(interconnect.SubmitBatch("", ids.reply_to, items))
    await c.publish(interconnect.host_submit_topic(ids.host), payload, qos=1)


async def test_submit_ack_report_round_trip(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess]
) -> None:
    cid = f"{ids.host}-a"
    directory = small_network([truth(cid)])
    async with (
        running(directory, ids) as host,
        mqtt_client(admin(), ids.results, ids.reports) as c,
    ):
        await submit(c, ids, cid, items(300))  # more than one batch each way
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


async def test_results_come_on_the_reply_topic_of_the_host_and_no_other_reply_to_is_used(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess]
) -> None:
    """Answers come on ``<reply_to>/<host>``, so the topic names their sender; a batch
    whose reply_to is not a router's results topic is dropped unanswered. Here it points
    at the host's own report topic, which the broker would let it publish on: a submitter
    must not be able to make a carrier publish where it likes."""
    cid = f"{ids.host}-f"
    directory = small_network([truth(cid)])
    forged = interconnect.host_dlr_topic(ids.host)
    async with (
        running(directory, ids) as host,
        mqtt_client(admin(), ids.results, f"{forged}/#") as c,
    ):
        batch = [msgspec.structs.replace(i, carrier=cid) for i in items(1)]
        payload = interconnect.SUBMIT_BATCH.encode(interconnect.SubmitBatch("", forged, batch))
        await c.publish(interconnect.host_submit_topic(ids.host), payload, qos=1)
        await submit(c, ids, cid, items(1, 1))  # a marker, after it on the same connection
        got: list[tuple[str, bytes]] = []

        def answered(message_id: str) -> bool:
            return any(
                r.id == message_id
                for t, p in got
                if t.startswith(ids.reply_to)
                for r in interconnect.RESULT_BATCH.decode(p).results
            )

        async with asyncio.timeout(WAIT_S):
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                got.append((m.topic.value, m.payload))
                if answered("m1"):
                    break
        # m0's answer, had it been sent, would have come before m1's: a second more for it
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    got.append((m.topic.value, m.payload))
    answers = [t for t, _ in got if t != forged]
    assert answers == [interconnect.result_topic(ids.reply_to, ids.host)]
    assert not answered("m0")
    # on the report topic only reports, of m1 (m0 was never taken, so never delivered)
    reports = [interconnect.REPORT_BATCH.decode(p).reports for t, p in got if t == forged]
    assert {r.id for batch in reports for r in batch} <= {"m1"}
    assert host.ledger[cid].submits == 1  # the forged batch was not even taken


async def test_host_directory_and_one_batch_for_many_carriers(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess]
) -> None:
    """A process announces its carriers (retained) and takes one submit batch for all of
    them on its host topic; results and reports name their carriers."""
    cids = [f"{ids.host}-h{i}" for i in range(3)]
    directory = small_network([truth(c) for c in cids])
    async with running(directory, ids) as host:
        async with mqtt_client(admin(), interconnect.directory_topic(ids.host)) as d:
            async with asyncio.timeout(WAIT_S):
                message = await anext(aiter(d.messages))
        assert isinstance(message.payload, bytes)
        announced = interconnect.DIRECTORY.decode(message.payload)
        assert announced.host == ids.host
        assert set(cids) <= set(announced.carriers)
        batch = [
            msgspec.structs.replace(item, carrier=cids[i % 3]) for i, item in enumerate(items(30))
        ]
        async with mqtt_client(admin(), ids.results, ids.reports) as c:
            payload = interconnect.SUBMIT_BATCH.encode(
                interconnect.SubmitBatch("", ids.reply_to, batch)
            )
            await c.publish(interconnect.host_submit_topic(ids.host), payload, qos=1)
            results, reports = await collect(c, lambda r, d: len(r) >= 30 and len(d) >= 30)
    assert {(r.id, r.carrier) for r in results} == {(i.id, i.carrier) for i in batch}
    assert {(r.id, r.carrier) for r in reports} == {(i.id, i.carrier) for i in batch}
    assert [host.ledger[c].accepted for c in cids] == [10, 10, 10]


async def test_throttling_past_the_cap_and_unknown_destination(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess]
) -> None:
    cid = f"{ids.host}-slow"
    directory = small_network([truth(cid, throughput_mps=5.0)])
    async with (
        running(directory, ids) as host,
        mqtt_client(admin(), ids.results) as c,
    ):
        await submit(c, ids, cid, [*items(40), *items(1, 40, to="+33612345678")])
        results, _ = await collect(c, lambda r, d: len(r) >= 41)
    codes = [r.code for r in results]
    assert codes.count(Code.NO_ROUTE) == 1
    assert codes.count(Code.QUEUE_OVERFLOW) >= 1
    assert codes.count(None) >= 5
    assert host.ledger[cid].rejected["throttled"] == codes.count(Code.QUEUE_OVERFLOW)


async def test_repeated_ids_are_acknowledged_and_not_delivered_twice(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess]
) -> None:
    cid = f"{ids.host}-r"
    directory = small_network([truth(cid)])
    async with (
        running(directory, ids) as host,
        mqtt_client(admin(), ids.results, ids.reports) as c,
    ):
        await submit(c, ids, cid, items(10))
        first, reports = await collect(c, lambda r, d: len(r) >= 10 and len(d) >= 10)
        assert sorted(r.id for r in reports) == sorted(r.id for r in first)
        await submit(c, ids, cid, items(10))  # the same ids again (a redelivery)
        await submit(c, ids, cid, items(1, 10))  # and one new message, as a marker
        again, more = await collect(c, lambda r, d: len(r) >= 11 and len(d) >= 1)
    assert all(r.duplicate and r.accepted for r in again if r.id != "m10")
    assert [r.id for r in more] == ["m10"]  # the repeats produced no report
    led = host.ledger[cid]
    assert (led.accepted, led.repeats, led.delivered) == (11, 10, 11)


def carriers_command(
    infra: InfraSettings, directory: Path, host_id: str, ledger: Path
) -> list[str]:
    return [sys.executable, "-m", "router", "carriers", "--network", str(directory),
            *carriers_args(infra, host_id), "--ledger", str(ledger)]  # fmt: skip


async def test_killed_carrier_process_is_seen_offline(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess], infra: InfraSettings,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A SIGKILLed process says nothing: the broker publishes its last-will, the host
    ``offline``, which takes all its carriers offline for the routers at once (their own
    retained statuses stay as they were)."""
    cids = [f"{ids.host}-k1", f"{ids.host}-k2"]
    directory = small_network([truth(c) for c in cids])
    args = carriers_command(infra, directory, ids.host, tmp_path / "l.json")
    host_topic = interconnect.host_status_topic(ids.host)
    statuses = [interconnect.carrier_status_topic(ids.host, c) for c in cids]
    proc = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with mqtt_client(admin(), host_topic, *statuses) as c:
            seen: dict[str, list[str]] = {t: [] for t in (host_topic, *statuses)}
            killed = False
            async with asyncio.timeout(WAIT_S):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    seen[m.topic.value].append(interconnect.decode_status(m.payload))
                    if not killed and all(s[-1:] == ["online"] for s in seen.values()):
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                    if killed and seen[host_topic][-1:] == ["offline"]:
                        break
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert seen[host_topic][-2:] == ["online", "offline"]
    for topic in statuses:
        assert seen[topic] == ["online"]
    assert not (tmp_path / "l.json").exists()  # it died: no clean shutdown happened


async def test_sigterm_stops_cleanly_with_ledger_and_offline_status(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess], infra: InfraSettings,
    tmp_path: Path,
) -> None:  # fmt: skip
    """On SIGTERM the process answers what it holds, clears its directory (retained,
    empty), says ``offline`` itself and writes its ledger."""
    cid = f"{ids.host}-t"
    directory = small_network([truth(cid)])
    ledger_path = tmp_path / "ledger.json"
    args = carriers_command(infra, directory, ids.host, ledger_path)
    host_topic = interconnect.host_status_topic(ids.host)
    directory_topic = interconnect.directory_topic(ids.host)
    proc = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with mqtt_client(admin(), host_topic, directory_topic, ids.results) as c:
            statuses: list[str] = []
            directories: list[bytes] = []
            stopping = False
            async with asyncio.timeout(WAIT_S):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    if m.topic.value == directory_topic:
                        directories.append(m.payload)
                    elif m.topic.value != host_topic:  # answered: now stop it
                        if not stopping:
                            proc.send_signal(signal.SIGTERM)
                            stopping = True
                    else:
                        statuses.append(interconnect.decode_status(m.payload))
                        if statuses == ["online"]:
                            await submit(c, ids, cid, items(3))
                        elif statuses[-1] == "offline":
                            break
        async with asyncio.timeout(WAIT_S):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert statuses == ["online", "offline"]
    assert interconnect.DIRECTORY.decode(directories[0]).carriers == [cid]
    assert directories[-1] == b""  # the directory cleared before the host said offline
    data = json.loads(ledger_path.read_text())
    assert data["carriers"][cid]["accepted"] == 3
    assert data["carriers"][cid]["submits"] == 3


async def test_scenario_outage_and_timing(
    small_network: SmallNetwork, ids: Ids, admin: Callable[[], MqttAccess]
) -> None:
    cids = [f"{ids.host}-s1", f"{ids.host}-s2"]
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
    statuses = [interconnect.carrier_status_topic(ids.host, c) for c in cids]
    async with mqtt_client(admin(), *statuses, ids.results) as c:
        seen: list[tuple[str, str, float]] = []
        start = time.monotonic()  # before the host starts its scenario clock
        async with running(directory, ids, scen) as host:
            async with asyncio.timeout(WAIT_S):
                async for m in c.messages:
                    if m.topic.value not in statuses:
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
            await submit(c, ids, cids[1], items(5))
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


async def test_whole_seed_network_is_hostable(network_dir: Path, ids: Ids) -> None:
    """Every carrier of the generated network (~1,570) comes online in one process."""
    async with running(network_dir, ids) as host:
        assert len(host.endpoints) > 1500
        assert all(e.ledger.online for e in host.endpoints.values())
