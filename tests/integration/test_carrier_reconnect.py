"""The carriers reconnect to a broker that was frozen, killed and started again (a
private Mosquitto, never the shared one), and publish their retained state again."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import structlog

from router.contracts import interconnect
from router.support.infra_settings import InfraSettings
from router.tools.infra.brokers import Mosquitto
from tests.carriers.carrier_helpers import truth
from tests.carriers.conftest import SmallNetwork
from tests.integration.test_carrier_reliability import (
    WAIT_S,
    ack,
    answered,
    balanced,
    inbox,
    items,
    running,
    submit,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration


class OwnMosquitto:
    """A Mosquitto of this test's own (config rendered as `supernet infra` does), which
    the test may kill: never the shared broker."""

    def __init__(self, state_dir: Path) -> None:
        self.settings = InfraSettings(host="127.0.0.1", mqtt_port=free_port(), state_dir=state_dir)
        self.broker = Mosquitto(self.settings)
        self.broker.prepare()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def port(self) -> int:
        return self.settings.mqtt_port

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.broker.argv(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    async with aiomqtt.Client("127.0.0.1", self.port, timeout=1.0):
                        return
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.02)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, publishes get no PUBACK."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def own_mosquitto(tmp_path: Path) -> AsyncIterator[OwnMosquitto]:
    broker = OwnMosquitto(tmp_path / "mosquitto-state")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.kill()


async def test_host_reconnects_to_a_restarted_broker(
    small_network: SmallNetwork, uid: str, own_mosquitto: OwnMosquitto
) -> None:
    cids = [f"{uid}-c1", f"{uid}-c2"]
    directory = small_network([truth(cids[0]), truth(cids[1], report_delay_ms=800.0)])
    host_id = f"test-{uid}"
    reply = f"test/{uid}/results"
    port = own_mosquitto.port
    with structlog.testing.capture_logs() as logs:
        async with running(directory, "127.0.0.1", port, host_id) as host:
            async with inbox("127.0.0.1", port, reply, interconnect.host_dlr_topic(host_id)) as box:
                await submit(
                    box.client, host_id, reply, [*items([0], cids[0]), *items([1], cids[1])]
                )
                await box.until(lambda b: answered(0, 1)(b) and "m0" in b.report_ids())
                await ack(box.client, host_id, cids[0], [0])
                await submit(box.client, host_id, reply, items([9], cids[0]))  # after the ack
                await box.until(answered(9))
            price = box.result("m0").price
            # c2's report falls due while the broker is frozen: its publish is cut off
            # when the broker dies, waiting for a PUBACK, and must go out again later
            own_mosquitto.freeze()
            await asyncio.sleep(1.2)
            await own_mosquitto.kill()  # retained state goes with it (no persistence)
            await asyncio.sleep(0.5)
            assert host.ledger[cids[1]].reports_sent == 0
            await own_mosquitto.start()

            statuses = [interconnect.status_topic(c) for c in cids]
            retained = [
                interconnect.directory_topic(host_id),
                interconnect.host_status_topic(host_id),
            ]
            topics = (*statuses, *retained, reply, interconnect.host_dlr_topic(host_id))
            async with inbox("127.0.0.1", port, *topics) as box:
                # the report held during the outage goes out (if this subscriber came
                # too late for its first publication, its re-send comes)
                await box.until(
                    lambda b: (
                        "m1" in b.report_ids()
                        and b.directory is not None
                        and all(b.statuses.get(t) == "online" for t in [*statuses, retained[1]])
                    )
                )
                assert box.directory is not None
                assert set(box.directory.carriers) == set(cids)
                await submit(box.client, host_id, reply, items([0, 2], cids[0]))
                await box.until(answered(0, 2))
            assert box.result("m0").duplicate  # accepted before the outage
            assert box.result("m0").price == price
            assert not box.result("m2").duplicate
            assert host.ledger[cids[1]].reports_sent == 1
            # what was published again is retained: a fresh subscriber gets it at once
            async with inbox("127.0.0.1", port, *statuses, *retained) as fresh:
                await fresh.until(lambda b: len(b.retained) == 4)
            assert fresh.directory is not None
            assert set(fresh.directory.carriers) == set(cids)
            assert set(fresh.statuses.values()) == {"online"}
    events = [e["event"] for e in logs]
    lost = [e for e in logs if e["event"].startswith("presence connections lost")]
    restored = [e for e in logs if e["event"] == "presence restored"]
    assert [e["connections"] for e in lost] == [2]
    assert [e["connections"] for e in restored] == [2]
    assert sum(e.startswith("broker connection lost") for e in events) == 1
    assert events.count("broker connection restored") == 1
    assert host.ledger[cids[0]].repeats == 1
    assert all(balanced(host, c) for c in cids)
