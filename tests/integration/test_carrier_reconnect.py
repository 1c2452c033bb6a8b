"""The carriers reconnect to a broker that was frozen, killed and started again (a
private Mosquitto, never the shared one, secured as `supernet infra up` secures it, with
its own credentials), and publish their retained state again."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import structlog

from router.contracts import interconnect
from router.support.credentials import MqttAccess
from router.support.infra_settings import InfraSettings
from router.support.procs import wait_for
from router.tools.infra import credentials
from router.tools.infra.brokers import Mosquitto
from tests.carriers.carrier_helpers import truth
from tests.carriers.conftest import SmallNetwork
from tests.integration.test_carrier_reliability import (
    WAIT_S,
    Names,
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
    """A Mosquitto of this test's own (config, CA, certificate, password and ACL files
    made as `supernet infra` makes them, in its own state directory), which the test may
    kill: never the shared broker."""

    def __init__(self, state_dir: Path) -> None:
        self.settings = InfraSettings(host="127.0.0.1", mqtt_port=free_port(), state_dir=state_dir)
        self.broker = Mosquitto(self.settings)
        self.broker.prepare()  # with security on, the secrets and Mosquitto's files too
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def port(self) -> int:
        return self.settings.mqtt_port

    def identity(self, role: str, name: str) -> MqttAccess:
        """MQTT identity ``name`` of this broker, provisioned if new (its files written
        again, and a running broker told to reload them, as `supernet infra` does for
        the brokers it started)."""
        s = self.settings
        added = s.security and credentials.provision(s, role, [name])
        access = s.secrets().mqtt(s.host, s.mqtt_port, name)
        if added and self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
            # as `credentials.provision` waits for a broker of `supernet infra up` (briefly)
            accepted = wait_for(lambda: credentials.mqtt_accepts(access), 10.0, interval=0.05)
            assert accepted, f"mosquitto did not take {name} after SIGHUP"
        return access

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.broker.argv(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        waiter = self.settings.secrets().mqtt("127.0.0.1", self.port, "infra")  # an admin
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    async with aiomqtt.Client(**waiter.client_kwargs(), timeout=1.0):
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
    names = Names.new(own_mosquitto.settings, uid, own_mosquitto.identity)
    cids = [f"{uid}-c1", f"{uid}-c2"]
    directory = small_network([truth(cids[0]), truth(cids[1], report_delay_ms=800.0)])
    host_id, reply = names.host, names.reply
    with structlog.testing.capture_logs() as logs:
        async with running(directory, names) as host:
            async with inbox(
                names.client(), names.results, interconnect.host_dlr_topic(host_id)
            ) as box:
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

            statuses = [interconnect.carrier_status_topic(host_id, c) for c in cids]
            retained = [
                interconnect.directory_topic(host_id),
                interconnect.host_status_topic(host_id),
            ]
            topics = (*statuses, *retained, names.results, interconnect.host_dlr_topic(host_id))
            async with inbox(names.client(), *topics) as box:
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
            async with inbox(names.client(), *statuses, *retained) as fresh:
                await fresh.until(lambda b: len(b.retained) == 4)
            assert fresh.directory is not None
            assert set(fresh.directory.carriers) == set(cids)
            assert set(fresh.statuses.values()) == {"online"}
    events = [e["event"] for e in logs]
    # one connection for the whole process (statuses included): one outage, logged once
    assert sum(e.startswith("broker connection lost") for e in events) == 1
    assert events.count("broker connection restored") == 1
    assert host.ledger[cids[0]].repeats == 1
    assert all(balanced(host, c) for c in cids)
