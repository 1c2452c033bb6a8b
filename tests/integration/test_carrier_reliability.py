"""The carriers survive faults like a real carrier, against a real Mosquitto: reports
re-sent until acknowledged, the journal across a SIGKILL (reconnection to a broker that
was killed and started again is in test_carrier_reconnect). The helpers here (a running
host, a test client's inbox, submits and acks) serve both modules.

The carrier process is its own MQTT identity (role ``carriers``, named by its host id);
the test client plays a router (an admin identity, one per connection): it submits with
a router's reply_to (``interconnect.reply_topic``) and reads its results topics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from carriers import journal as jr
from carriers import network
from carriers.host import CarrierHost
from router.contracts import interconnect
from router.support.credentials import MqttAccess
from router.support.infra_settings import InfraSettings
from tests.carriers.carrier_helpers import serving, truth
from tests.carriers.conftest import SmallNetwork
from tests.integration.harness import identity, security_args, unique

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # generous: only for waiting, never asserted
RESEND_S = 0.4


Identity = Callable[[str, str], MqttAccess]
"""``(role, name)``: that identity, provisioned on the test's broker if new."""


@dataclass(frozen=True)
class Names:
    """One test's names on a broker (``infra``): its carrier process ``host`` (an identity
    of role ``carriers``) and the router its test client plays (``router``)."""

    infra: InfraSettings
    host: str
    router: str
    identity: Identity

    @classmethod
    def new(cls, infra: InfraSettings, uid: str, ident: Identity | None = None) -> Names:
        ident = ident or functools.partial(identity, infra)
        names = cls(infra, f"test-{uid}", f"test-router-{uid}", ident)
        ident("carriers", names.host)
        return names

    @property
    def host_access(self) -> MqttAccess:
        return self.identity("carriers", self.host)

    def client(self) -> MqttAccess:
        """A fresh admin identity for one test client connection."""
        return self.identity("admin", unique("test-client"))

    @property
    def reply(self) -> str:
        return interconnect.reply_topic(self.router)

    @property
    def results(self) -> str:
        return interconnect.results_subscription(self.router)


@pytest.fixture
def names(infra: InfraSettings, uid: str) -> Names:
    return Names.new(infra, uid)


@asynccontextmanager
async def running(
    directory: Path,
    names: Names,
    *,
    report_resend_s: float = RESEND_S,
    max_unacked_reports: int = 500_000,
    journal: jr.Journal | None = None,
) -> AsyncIterator[CarrierHost]:
    endpoints, ledger = network.load_endpoints(directory, now=time.monotonic())
    carrier_host = CarrierHost(
        endpoints,
        ledger,
        mqtt=names.host_access,
        host_id=names.host,
        report_resend_s=report_resend_s,
        max_unacked_reports=max_unacked_reports,
        journal=journal,
    )
    async with serving(carrier_host, WAIT_S) as served:
        yield served


@dataclass
class Inbox:
    """What one test client received: results, reports (with arrival times), the
    statuses and directory it saw, and which of them came retained."""

    client: aiomqtt.Client
    results: list[interconnect.SubmitResult] = field(default_factory=list)
    reports: list[tuple[float, interconnect.DeliveryReport]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # topic -> last status
    directory: interconnect.HostDirectory | None = None
    retained: set[str] = field(default_factory=set)  # topics whose message came retained

    async def until(self, done: Callable[[Inbox], bool]) -> None:
        if done(self):
            return
        async with asyncio.timeout(WAIT_S):
            async for m in self.client.messages:
                self._add(m)
                if done(self):
                    return

    def _add(self, m: aiomqtt.Message) -> None:
        topic = m.topic.value
        assert isinstance(m.payload, bytes)
        if m.retain:
            self.retained.add(topic)
        if topic.endswith("/dlr"):
            now = time.monotonic()
            self.reports += [(now, r) for r in interconnect.REPORT_BATCH.decode(m.payload).reports]
        elif topic.endswith("/carriers"):
            self.directory = interconnect.DIRECTORY.decode(m.payload) if m.payload else None
        elif topic.endswith("/status"):
            self.statuses[topic] = interconnect.decode_status(m.payload)
        else:
            self.results += interconnect.RESULT_BATCH.decode(m.payload).results

    def report_ids(self, resent: int | None = None) -> set[str]:
        return {r.id for _, r in self.reports if resent is None or r.resent == resent}

    def result(self, message_id: str) -> interconnect.SubmitResult:
        return next(r for r in reversed(self.results) if r.id == message_id)


@asynccontextmanager
async def inbox(access: MqttAccess, *topics: str) -> AsyncIterator[Inbox]:
    async with aiomqtt.Client(**access.client_kwargs()) as c:
        for topic in topics:
            await c.subscribe(topic, qos=1)
        yield Inbox(c)


def items(ids: list[int], carrier: str = "") -> list[interconnect.SubmitItem]:
    return [
        interconnect.SubmitItem(
            id=f"m{i}", to="+447700900123", carrier=carrier, account="AC1", price=0.01
        )
        for i in ids
    ]


async def submit(
    c: aiomqtt.Client, host_id: str, reply_to: str, batch: list[interconnect.SubmitItem]
) -> None:
    payload = interconnect.SUBMIT_BATCH.encode(interconnect.SubmitBatch("", reply_to, batch))
    await c.publish(interconnect.host_submit_topic(host_id), payload, qos=1)


async def ack(c: aiomqtt.Client, host_id: str, carrier: str, ids: list[int]) -> None:
    acks = [interconnect.ReportAck(f"m{i}", carrier) for i in ids]
    payload = interconnect.REPORT_ACK_BATCH.encode(interconnect.ReportAckBatch("test", acks))
    await c.publish(interconnect.host_dlr_ack_topic(host_id), payload, qos=1)


def answered(*ids: int | str, since: int = 0) -> Callable[[Inbox], bool]:
    """True once results for these ids came (``since``: counting from that result on)."""
    want = {i if isinstance(i, str) else f"m{i}" for i in ids}
    return lambda box: want <= {r.id for r in box.results[since:]}


async def sync(box: Inbox, host_id: str, carrier: str, reply: str, marker: str) -> None:
    """Wait until the host has handled everything this client sent before: a submit it
    rejects (no route), sent after them on the same connection, is answered."""
    batch = [interconnect.SubmitItem(id=marker, to="+33612345678", carrier=carrier)]
    await submit(box.client, host_id, reply, batch)
    await box.until(answered(marker))


def balanced(host: CarrierHost, carrier: str) -> bool:
    c = host.ledger[carrier]
    return (
        c.accepted + c.reports_restored == c.reports_sent + c.reports_lost + c.reports_pending
        and c.reports_unacked
        == c.reports_sent + c.reports_restored_unacked - c.reports_acked - c.reports_dropped
    )


# ---- acknowledged reports ---------------------------------------------------------------


async def test_unacked_report_is_resent_until_acked(
    small_network: SmallNetwork, names: Names
) -> None:
    cid, host_id = f"{names.host}-a", names.host
    directory = small_network([truth(cid)])
    reply = names.reply
    async with (
        running(directory, names) as host,
        inbox(names.client(), names.results, interconnect.host_dlr_topic(host_id)) as box,
    ):
        submitted = time.monotonic()
        await submit(box.client, host_id, reply, items([0, 1, 2, 3], cid))
        await box.until(lambda b: len(b.report_ids(0)) == 4)
        await ack(box.client, host_id, cid, [0, 1])
        await box.until(lambda b: b.report_ids(1) >= {"m2", "m3"})
        resent_at = min(t for t, r in box.reports if r.resent == 1)
        assert resent_at - submitted >= RESEND_S
        await ack(box.client, host_id, cid, [2, 3])
        await submit(box.client, host_id, reply, items([4], cid))  # after the acks, in order
        await box.until(answered(4))
        after_acks = len(box.reports)
        # m4 is re-sent twice; m2 and m3, acked before m4 was even sent, would have come
        # again before m4's second re-send
        await box.until(lambda b: "m4" in b.report_ids(2))
    late = {r.id for _, r in box.reports[after_acks:]}
    assert late == {"m4"}
    assert not {"m0", "m1"} & box.report_ids(1)
    assert sorted((r.id, r.resent) for _, r in box.reports if r.id != "m4") == [
        ("m0", 0),
        ("m1", 0),
        ("m2", 0),
        ("m2", 1),
        ("m3", 0),
        ("m3", 1),
    ]
    led = host.ledger[cid]
    assert (led.reports_sent, led.reports_acked, led.reports_unacked) == (5, 4, 1)
    assert led.reports_resent >= 4
    assert balanced(host, cid)


async def test_store_bound_drops_the_oldest_and_bad_acks_are_not_fatal(
    small_network: SmallNetwork, names: Names
) -> None:
    cid, host_id = f"{names.host}-b", names.host
    directory = small_network([truth(cid)])
    reply = names.reply
    async with (
        running(directory, names, max_unacked_reports=2) as host,
        inbox(names.client(), names.results, interconnect.host_dlr_topic(host_id)) as box,
    ):
        ack_topic = interconnect.host_dlr_ack_topic(host_id)
        await box.client.publish(ack_topic, b"\xc1 not msgpack", qos=1)
        await box.client.publish(ack_topic, b"", qos=1)
        await ack(box.client, host_id, cid, [99])  # a report it never sent
        await submit(box.client, host_id, reply, items([0, 1, 2, 3, 4], cid))
        await box.until(lambda b: len(b.report_ids(0)) == 5)
        await box.until(lambda b: len(b.report_ids(2)) == 2)
    # the two published last are held and re-sent; the three before them were given up
    newest = [r.id for _, r in box.reports if r.resent == 0][-2:]
    assert box.report_ids(1) == box.report_ids(2) == set(newest)
    led = host.ledger[cid]
    assert (led.reports_sent, led.reports_dropped, led.reports_unacked) == (5, 3, 2)
    assert led.reports_acked == 0
    assert balanced(host, cid)


async def test_offline_carrier_holds_its_resends(small_network: SmallNetwork, names: Names) -> None:
    cid, host_id = f"{names.host}-o", names.host
    directory = small_network([truth(cid)])
    reply = names.reply
    async with (
        running(directory, names) as host,
        inbox(names.client(), names.results, interconnect.host_dlr_topic(host_id)) as box,
    ):
        await submit(box.client, host_id, reply, items([0], cid))
        await box.until(lambda b: "m0" in b.report_ids(0))
        host.endpoints[cid].overrides.offline = True
        host.status_changed(cid)
        offline_at = time.monotonic()
        # an outage that outlasts several resend clocks: nothing may come meanwhile
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3 * RESEND_S):
                await box.until(lambda b: len(b.reports) > 1)
        assert [(r.id, r.resent) for _, r in box.reports] == [("m0", 0)]
        host.endpoints[cid].overrides.offline = False
        host.status_changed(cid)
        await box.until(lambda b: "m0" in b.report_ids(1))
    assert min(t for t, r in box.reports if r.resent == 1) - offline_at >= 3 * RESEND_S


# ---- the journal ------------------------------------------------------------------------


async def test_host_publishes_what_its_journal_held(
    small_network: SmallNetwork, names: Names, tmp_path: Path
) -> None:
    """Unacked reports go again at once (resent + 1), the unpublished one at its due time;
    acked and lost ones never."""
    cid, host_id = f"{names.host}-r", names.host
    directory = small_network([truth(cid)])
    wall = time.time_ns() // 1_000_000
    due_ms = wall + 1_500

    def item(n: int, due: int = wall, lost: bool = False) -> jr.AcceptedItem:
        report = interconnect.DeliveryReport(
            id=f"m{n}", carrier=cid, route="direct", status="delivered", ts=due, price=0.01
        )
        return jr.AcceptedItem(cid, f"m{n}", 0.01, wall, None if lost else report, due)

    records: list[jr.Record] = [
        jr.Opened(host_id, 1, wall),
        jr.Accepted([item(1), item(2), item(3, lost=True), item(4, due_ms)]),
        jr.Published([jr.PublishedItem(cid, "m1", "delivered", 0)]),
        jr.Published([jr.PublishedItem(cid, "m2", "delivered", 1)]),
        jr.Acked([(cid, "m1")]),
    ]
    path = tmp_path / "j"
    path.write_bytes(b"".join(jr.encode(r) for r in records))
    journal = jr.Journal.open(path)
    try:
        async with (
            inbox(names.client(), interconnect.host_dlr_topic(host_id)) as box,
            running(directory, names, journal=journal, report_resend_s=30.0),
        ):
            await box.until(lambda b: "m4" in b.report_ids())
            arrived_ms = time.time_ns() // 1_000_000
    finally:
        journal.close()
    assert [(r.id, r.resent) for _, r in box.reports] == [("m2", 2), ("m4", 0)]
    assert arrived_ms >= due_ms
    found = jr.read(path)
    assert found.damaged_bytes == 0
    assert jr.replay(found.records).published[(cid, "m2")].resent == 2


async def test_journal_survives_sigkill_and_restart(
    small_network: SmallNetwork, names: Names, tmp_path: Path
) -> None:
    cid, host_id = f"{names.host}-j", names.host
    directory = small_network([truth(cid)])
    journal = tmp_path / "carriers.journal"
    ledger_path = tmp_path / "ledger.json"
    reply = names.reply
    base = [
        sys.executable, "-m", "router", "carriers", "--network", str(directory),
        "--mqtt-host", names.infra.host, "--mqtt-port", str(names.infra.mqtt_port),
        *security_args(names.infra), "--journal", str(journal), "--ledger", str(ledger_path),
    ]  # fmt: skip
    topics = (
        names.results,
        interconnect.host_dlr_topic(host_id),
        interconnect.directory_topic(host_id),
    )
    first = await asyncio.create_subprocess_exec(
        *base, "--host-id", host_id, "--report-resend-s", "60",
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    second = None
    try:
        async with inbox(names.client(), *topics) as box:
            await box.until(lambda b: b.directory is not None)  # subscribed and announced
            await submit(box.client, host_id, reply, items([0, 1, 2, 3, 4], cid))
            await box.until(lambda b: len(b.report_ids(0)) == 5)
            await ack(box.client, host_id, cid, [0, 1])
            await sync(box, host_id, cid, reply, "x1")  # acked, and the publishes journalled
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            assert not ledger_path.exists()
            before, mark = len(box.reports), len(box.results)

            # Started again on the same journal, without --host-id: it keeps its name.
            second = await asyncio.create_subprocess_exec(
                *base, "--report-resend-s", "1", stderr=asyncio.subprocess.DEVNULL
            )
            await box.until(lambda b: b.report_ids(1) >= {"m2", "m3", "m4"})
            await submit(box.client, host_id, reply, items([0, 2, 5, 6], cid))
            await box.until(
                lambda b: answered(0, 2, 5, 6, since=mark)(b) and b.report_ids(0) >= {"m5", "m6"}
            )
            await ack(box.client, host_id, cid, [2, 3, 4, 5])
            await sync(box, host_id, cid, reply, "x2")
            after_acks = len(box.reports)
            # m6 (not acked) is re-sent a second after its first publication; the others,
            # had the acks not stopped them, would have come again before
            await box.until(lambda b: "m6" in b.report_ids(1))
            second.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT_S):
                code = await second.wait()
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0
    # a repeat after the restart is a duplicate, billed as the first time
    for i in (0, 2):
        assert (box.result(f"m{i}").duplicate, box.result(f"m{i}").price) == (True, 0.01)
    assert not box.result("m5").duplicate
    restarted = [r for _, r in box.reports[before:]]
    assert {r.id for r in restarted if r.resent == 1} >= {"m2", "m3", "m4"}
    assert not {"m0", "m1"} & {r.id for r in restarted}  # acked before the kill
    assert {r.id for _, r in box.reports[after_acks:]} == {"m6"}

    led = json.loads(ledger_path.read_text())["carriers"][cid]
    assert (led["accepted"], led["repeats"], led["reports_restored_unacked"]) == (2, 2, 3)
    assert (led["reports_acked"], led["reports_unacked"]) == (4, 1)

    truth_ = jr.ground_truth([journal])
    assert truth_.accepted == {f"m{i}": frozenset({cid}) for i in range(7)}
    assert truth_.reports_acked == frozenset((cid, f"m{i}") for i in range(6))
    assert set(truth_.reports_published) == {(cid, f"m{i}") for i in range(7)}
    assert truth_.repeats == 2
    assert truth_.starts == 2
    assert truth_.accepted_twice == frozenset()
