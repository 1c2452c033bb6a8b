"""The MQTT transport without a broker: the outbox's batching per carrier process, ack
batching and requeueing, and the link over a fake client (publishing, dispatch, a
cut-off batch published again after a reconnect, the reconnect backoff)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiomqtt
import msgspec

from router.contracts import interconnect
from router.engine.transports.mqtt import (
    ACK_FLUSH_S,
    UNADDRESSED,
    CarrierLink,
    Client,
    MqttOutbox,
)
from router.engine.transports.tokens import ReplayGuard, Signer
from router.support.backoff import Backoff
from router.support.credentials import MqttAccess


def item(i: int, carrier: str) -> interconnect.SubmitItem:
    return interconnect.SubmitItem(id=f"m{i}", to="+447700900123", carrier=carrier)


def submits(payload: bytes) -> list[tuple[str, str]]:
    batch = interconnect.SUBMIT_BATCH.decode(payload)
    return [(x.id, x.carrier) for x in batch.items]


async def take_now(outbox: MqttOutbox, timeout: float = 1.0) -> tuple[str, list[Any], bytes]:
    async with asyncio.timeout(timeout):
        return await outbox.take()


# --- the outbox ---------------------------------------------------------------------------


async def test_submits_are_batched_per_carrier_process_by_its_directory() -> None:
    outbox = MqttOutbox("w1")
    outbox.on_directory("h1", ["gb-ee", "gb-o2"])
    outbox.submit("gb-ee", item(1, "gb-ee"))
    outbox.submit("gb-o2", item(2, "gb-o2"))
    outbox.submit("fr-orange", item(3, "fr-orange"))  # no directory names it
    outbox.flush()
    batches = {}
    for _ in range(2):
        topic, items, payload = await take_now(outbox)
        batches[topic] = submits(payload)
        assert [(x.id, x.carrier) for x in items] == batches[topic]
        if topic:
            assert interconnect.SUBMIT_BATCH.decode(payload).reply_to == (
                interconnect.reply_topic("w1")
            )
        outbox.published()
    assert batches == {
        interconnect.host_submit_topic("h1"): [("m1", "gb-ee"), ("m2", "gb-o2")],
        UNADDRESSED: [("m3", "fr-orange")],  # no process can take it: sent to nobody
    }
    assert outbox.unaddressed == 1


async def test_a_directory_that_drops_a_carrier_leaves_it_unaddressed() -> None:
    outbox = MqttOutbox("w1")
    outbox.on_directory("h1", ["gb-ee", "gb-o2"])
    outbox.on_directory("h1", ["gb-o2"])
    outbox.submit("gb-ee", item(1, "gb-ee"))
    outbox.flush()
    topic, _, _ = await take_now(outbox)
    assert topic == UNADDRESSED
    assert outbox.hosts == {"gb-o2": "h1"}


async def test_a_batch_is_queued_when_full_or_when_its_timer_runs_out() -> None:
    outbox = MqttOutbox("w1")
    for i in range(interconnect.MAX_BATCH):
        outbox.submit("c", item(i, "c"))
    assert outbox.queued == 1  # full: queued at once
    _, items, _ = await take_now(outbox)
    assert len(items) == interconnect.MAX_BATCH
    outbox.published()
    outbox.submit("c", item(999, "c"))
    assert outbox.queued == 0  # being filled
    _, items, _ = await take_now(outbox)  # after FLUSH_INTERVAL_S
    assert [x.id for x in items] == ["m999"]


async def test_acknowledgements_are_batched_per_carrier_process() -> None:
    outbox = MqttOutbox("w1")
    outbox.ack_report("h1", "gb-ee", "m1")
    outbox.ack_report("h2", "fr-orange", "m2")
    outbox.ack_report("h1", "gb-o2", "m3")
    assert outbox.queued == 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    got = {}
    for _ in range(2):
        topic, items, payload = await take_now(outbox)
        assert items == []
        batch = interconnect.REPORT_ACK_BATCH.decode(payload)
        assert batch.router == "w1"
        got[topic] = [(a.carrier, a.id) for a in batch.acks]
    assert loop.time() - started >= ACK_FLUSH_S * 0.9
    assert got == {
        interconnect.host_dlr_ack_topic("h1"): [("gb-ee", "m1"), ("gb-o2", "m3")],
        interconnect.host_dlr_ack_topic("h2"): [("fr-orange", "m2")],
    }


async def test_a_full_ack_batch_is_queued_at_once() -> None:
    outbox = MqttOutbox("w1")
    for i in range(interconnect.MAX_BATCH * 4):
        outbox.ack_report("h1", "c", f"m{i}")
    assert outbox.queued == 1
    _, _, payload = await take_now(outbox)
    assert len(interconnect.REPORT_ACK_BATCH.decode(payload).acks) == interconnect.MAX_BATCH * 4


async def test_a_cut_off_batch_goes_first_again_and_idle_waits_for_it() -> None:
    outbox = MqttOutbox("w1")
    outbox.on_directory("h1", ["c1"])
    outbox.on_directory("h2", ["c2"])
    for i in (1, 2):
        outbox.submit(f"c{i}", item(i, f"c{i}"))
    outbox.flush()
    first = await take_now(outbox)
    assert outbox.queued == 2  # one queued, one being published
    outbox.requeue(first)
    assert (await take_now(outbox))[0] == first[0]
    outbox.published()
    idle = asyncio.create_task(outbox.wait_idle())
    second = await take_now(outbox)
    await asyncio.sleep(0)
    assert not idle.done()  # a batch is still being published
    assert second[0] != first[0]
    outbox.published()
    async with asyncio.timeout(1):
        await idle
    assert outbox.queued == 0


async def test_a_batch_wakes_one_waiting_publisher_and_a_cancelled_one_passes_it_on() -> None:
    outbox = MqttOutbox("w1")
    outbox.on_directory("h1", ["c1"])
    takers = [asyncio.create_task(outbox.take()) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait
    outbox.submit("c1", item(1, "c1"))
    outbox.flush()  # one batch: the first taker is woken for it...
    takers[0].cancel()  # ...and cancelled before it runs
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert takers[0].cancelled()
    done = [t for t in takers[1:] if t.done()]
    assert len(done) == 1  # the batch went to one of the others, and only to one
    assert submits(done[0].result()[2]) == [("m1", "c1")]
    outbox.submit("c1", item(2, "c1"))
    outbox.flush()
    (rest,) = [t for t in takers[1:] if not t.done()]
    async with asyncio.timeout(1):
        assert submits((await rest)[2]) == [("m2", "c1")]


# --- the link, over a fake client ---------------------------------------------------------


class Handler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_published(self, carrier: str, items: Sequence[interconnect.SubmitItem]) -> None:
        self.calls.append(("published", [x.id for x in items]))

    def on_results(self, carrier: str, results: Sequence[interconnect.SubmitResult]) -> None:
        self.calls.append(("results", (carrier, [r.id for r in results])))

    def on_reports(self, carrier: str, reports: Sequence[interconnect.DeliveryReport]) -> None:
        self.calls.append(("reports", (carrier, [r.id for r in reports])))

    def on_status(self, carrier: str, online: bool) -> None:
        self.calls.append(("status", (carrier, online)))

    def on_changed(self, carriers: Sequence[str]) -> None:
        self.calls.append(("changed", list(carriers)))

    def named(self, kind: str) -> list[Any]:
        return [arg for k, arg in self.calls if k == kind]


class FakeClient:
    """A broker session: takes publishes (or cuts them off), feeds incoming messages."""

    def __init__(self, *, cut_publishes: bool = False) -> None:
        self.pending_calls_threshold = 10
        self.subscribed: list[str] = []
        self.published: list[tuple[str, bytes]] = []
        self.cut_publishes = cut_publishes
        self.publishing = asyncio.Event()
        self.incoming: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed.set()

    async def subscribe(self, topic: str, qos: int = 0) -> object:
        self.subscribed.append(topic)
        return ()

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.publishing.set()
        if self.cut_publishes:
            await asyncio.sleep(0.01)
            self.drop()
            raise aiomqtt.MqttError("connection lost while publishing")
        self.published.append((topic, payload))

    def drop(self) -> None:
        self.incoming.put_nowait(None)

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[aiomqtt.Message]:
        while True:
            got = await self.incoming.get()
            if got is None:
                raise aiomqtt.MqttError("Disconnected during message iteration")
            yield aiomqtt.Message(got[0], got[1], 1, False, 1, None)


class Refused:
    async def __aenter__(self) -> FakeClient:
        raise OSError("connection refused")

    async def __aexit__(self, *exc: object) -> None:
        return None


class Recording(Backoff):
    def __init__(self) -> None:
        super().__init__(0.001, 0.004, rng=lambda: 1.0)
        self.given: list[float] = []

    def delay(self) -> float:
        d = super().delay()
        self.given.append(d)
        return d


def link_over(
    sessions: list[FakeClient | Refused],
    handler: Handler,
    backoff: Backoff | None = None,
    guard: ReplayGuard | None = None,
) -> tuple[CarrierLink, MqttOutbox, list[bool]]:
    outbox = MqttOutbox("w1", guard)
    states: list[bool] = []
    pending = list(sessions)

    def connect() -> contextlib.AbstractAsyncContextManager[Client]:
        return pending.pop(0) if pending else FakeClient()

    link = CarrierLink(
        MqttAccess("localhost", 1883), "w1", "routers", outbox, handler,
        on_state=states.append, backoff=backoff or Recording(), connect=connect,
    )  # fmt: skip
    return link, outbox, states


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - a test watching the link's tasks
            await asyncio.sleep(0.005)


async def test_the_link_subscribes_publishes_and_the_handler_hears_of_it() -> None:
    client = FakeClient()
    handler = Handler()
    link, outbox, states = link_over([client], handler)
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(link.run())
        async with asyncio.timeout(1):
            await link.wait_ready()
        assert client.subscribed == [
            "supernet/router/w1/results/+",
            interconnect.dlr_shared_subscription("routers"),
            interconnect.DIRECTORY_ALL,
            interconnect.HOST_STATUS_ALL,
            interconnect.CARRIER_STATUS_ALL,
        ]
        assert client.pending_calls_threshold > 10
        outbox.on_directory("h1", ["c1"])
        outbox.submit("c1", item(1, "c1"))
        outbox.submit("c2", item(2, "c2"))  # no process hosts it: published to nobody
        link.flush()
        async with asyncio.timeout(1):
            await link.wait_idle()
        runner.cancel()
    assert [t for t, _ in client.published] == [interconnect.host_submit_topic("h1")]
    # both count as published: c2's submit timeout runs and the message fails over
    assert sorted(handler.named("published")) == [["m1"], ["m2"]]
    assert states == [True]


async def test_incoming_traffic_is_dispatched_and_malformed_payloads_are_counted() -> None:
    client = FakeClient()
    handler = Handler()
    link, outbox, _ = link_over([client], handler)
    result = interconnect.SubmitResultBatch(
        "h1", [interconnect.SubmitResult(id="m1", accepted=True, carrier="gb-ee")]
    )
    report = interconnect.DeliveryReportBatch(
        "h1",
        [interconnect.DeliveryReport("m2", "gb-ee", "direct", "delivered", 1, sender="ACME")],
    )
    results_from_h1 = interconnect.result_topic(interconnect.reply_topic("w1"), "h1")
    feed = [
        (interconnect.directory_topic("h1"),
         interconnect.DIRECTORY.encode(interconnect.HostDirectory("h1", ["gb-ee"]))),
        (results_from_h1, interconnect.RESULT_BATCH.encode(result)),
        (interconnect.host_dlr_topic("h1"), interconnect.REPORT_BATCH.encode(report)),
        (interconnect.carrier_status_topic("h1", "gb-ee"), interconnect.OFFLINE),
        (interconnect.carrier_status_topic("h1", "gb-o2"), b""),  # a cleared retained status
        (results_from_h1, b"\xc1 not msgpack"),
        (interconnect.carrier_status_topic("h1", "gb-o2"), b"sideways"),
    ]  # fmt: skip
    for message in feed:
        client.incoming.put_nowait(message)
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(link.run())
        await until(lambda: link.malformed == 2)
        runner.cancel()
    assert handler.calls == [
        ("changed", []),
        ("status", ("gb-ee", True)),
        ("changed", ["gb-ee"]),
        ("results", ("h1", ["m1"])),
        ("reports", ("h1", ["m2"])),
        ("status", ("gb-ee", False)),
    ]
    assert outbox.hosts == {"gb-ee": "h1"}


async def test_only_a_carriers_own_process_speaks_for_it() -> None:
    client = FakeClient()
    handler = Handler()
    link, _, _ = link_over([client], handler)
    directory = interconnect.DIRECTORY.encode(interconnect.HostDirectory("h1", ["gb-ee"]))
    result = interconnect.SubmitResultBatch(
        "h1", [interconnect.SubmitResult(id="m1", accepted=True, carrier="gb-ee")]
    )
    report = interconnect.DeliveryReportBatch(
        "h1", [interconnect.DeliveryReport("m2", "gb-ee", "direct", "delivered", 1)]
    )
    feed = [
        (interconnect.directory_topic("h1"), directory),
        # h2 answers and reports for h1's carrier, and announces it offline: ignored
        (interconnect.result_topic(interconnect.reply_topic("w1"), "h2"),
         interconnect.RESULT_BATCH.encode(result)),
        (interconnect.host_dlr_topic("h2"), interconnect.REPORT_BATCH.encode(report)),
        (interconnect.carrier_status_topic("h2", "gb-ee"), interconnect.OFFLINE),
        # h1's own process going away takes its carriers with it
        (interconnect.host_status_topic("h1"), interconnect.OFFLINE),
        (interconnect.host_status_topic("h1"), interconnect.ONLINE),
    ]  # fmt: skip
    for message in feed:
        client.incoming.put_nowait(message)
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(link.run())
        await until(lambda: len(handler.named("status")) == 3)
        runner.cancel()
    assert handler.named("status") == [("gb-ee", True), ("gb-ee", False), ("gb-ee", True)]
    assert handler.named("results") == [("h2", [])]
    assert handler.named("reports") == [("h2", [])]
    assert link.foreign == 2


async def test_a_batch_cut_off_by_a_lost_connection_is_published_after_reconnecting() -> None:
    cut = FakeClient(cut_publishes=True)
    good = FakeClient()
    handler = Handler()
    backoff = Recording()
    link, outbox, states = link_over([Refused(), Refused(), cut, good], handler, backoff)
    outbox.on_directory("h1", ["c1"])
    outbox.submit("c1", item(1, "c1"))
    outbox.flush()
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(link.run())
        await until(lambda: good.published)
        async with asyncio.timeout(1):
            await link.wait_idle()
        runner.cancel()
    assert cut.publishing.is_set()
    assert cut.published == []
    assert [submits(p) for _, p in good.published] == [[("m1", "c1")]]
    # on_published only once the broker took it; a reconnect is announced as a change
    assert handler.calls == [("changed", []), ("changed", []), ("published", ["m1"])]
    # two refusals in a row climb; the session that came up resets the climb
    assert backoff.given == [0.001, 0.002, 0.001]
    assert states == [False, False, True, False, True]
    assert link.connections == 2


async def test_reconnect_delays_climb_to_the_cap_while_the_broker_stays_away() -> None:
    handler = Handler()
    backoff = Recording()
    link, _, _ = link_over([Refused() for _ in range(6)], handler, backoff)
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(link.run())
        async with asyncio.timeout(5):
            await link.wait_ready()
        runner.cancel()
    assert backoff.given == [0.001, 0.002, 0.004, 0.004, 0.004, 0.004]
    assert handler.calls == [("changed", [])]


async def test_with_security_only_reports_of_signed_attempts_pass_and_only_once() -> None:
    client = FakeClient()
    handler = Handler()
    guard = ReplayGuard(Signer(b"k" * 32), horizon_s=3600.0, capacity=100)
    link, outbox, _ = link_over([client], handler, guard=guard)
    outbox.on_directory("h1", ["gb-ee"])
    now_ms = time.time_ns() // 1_000_000
    outbox.submit("gb-ee", msgspec.structs.replace(item(1, "gb-ee"), ts=now_ms, price=0.01))
    outbox.flush()
    _, _, payload = await take_now(outbox)
    outbox.published()
    sent = interconnect.SUBMIT_BATCH.decode(payload).items[0]
    assert sent.token  # signed for h1 on its way out
    genuine = interconnect.DeliveryReport(
        sent.id, sent.carrier, "direct", "delivered", now_ms, attempt=sent.attempt,
        submitted_ts=sent.ts, quote=sent.price, token=sent.token,
    )  # fmt: skip
    forged = msgspec.structs.replace(genuine, id="m9")  # an id no router submitted
    altered = msgspec.structs.replace(genuine, quote=0.0)  # a cheaper price
    dlr = interconnect.host_dlr_topic("h1")

    def batch(*reports: interconnect.DeliveryReport) -> tuple[str, bytes]:
        return dlr, interconnect.REPORT_BATCH.encode(
            interconnect.DeliveryReportBatch("h1", list(reports))
        )

    client.incoming.put_nowait(
        (interconnect.directory_topic("h1"),
         interconnect.DIRECTORY.encode(interconnect.HostDirectory("h1", ["gb-ee"])))
    )  # fmt: skip
    client.incoming.put_nowait(batch(genuine, forged, altered))
    client.incoming.put_nowait(batch(genuine))  # a repeat before the receipt is durable
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(link.run())
        await until(lambda: len(handler.named("reports")) == 2)
        outbox.ack_report("h1", "gb-ee", "m1")  # the pipeline: the receipt is durable
        ack_topic = interconnect.host_dlr_ack_topic("h1")
        await until(lambda: [t for t, _ in client.published].count(ack_topic) == 1)
        client.incoming.put_nowait(batch(msgspec.structs.replace(genuine, resent=1)))
        # the repeat is acknowledged again, not written
        await until(lambda: [t for t, _ in client.published].count(ack_topic) == 2)
        runner.cancel()
    assert handler.named("reports") == [("h1", ["m1"]), ("h1", []), ("h1", [])]
    assert link.refused == {"forged": 2, "pending": 1, "repeat": 1}
