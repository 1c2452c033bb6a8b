"""The demo's readiness and outage signals, and the fleet command line it builds."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from router.contracts import interconnect
from router.engine import kafka, settings
from router.support.credentials import KafkaAccess, MqttAccess
from router.support.infra_settings import InfraSettings
from router.tools.demo import signals, steps
from router.tools.demo.config import DemoConfig


async def test_only_this_runs_statuses_mark_readiness_and_the_outage() -> None:
    watch = signals.CarrierWatch(MqttAccess("127.0.0.1", 1), "demo-7", "gb-ee")
    host = interconnect.host_status_topic("demo-7")
    carrier = interconnect.carrier_status_topic("demo-7", "gb-ee")
    watch.seen(interconnect.host_status_topic("other"), interconnect.ONLINE, 1)
    watch.seen(host, interconnect.OFFLINE, 2)
    assert not watch.host_online.is_set()
    watch.seen(host, interconnect.ONLINE, 3)
    assert watch.host_online.is_set()
    watch.seen(carrier, interconnect.ONLINE, 4)  # announced at start: no outage yet
    assert (watch.offline_ms, watch.online_again_ms) == (None, None)
    watch.seen(carrier, interconnect.OFFLINE, 10)
    watch.seen(carrier, interconnect.OFFLINE, 11)  # published again: the first counts
    watch.seen(carrier, interconnect.ONLINE, 20)
    watch.seen(carrier, interconnect.OFFLINE, 30)  # the shutdown, after the outage
    assert (watch.offline_ms, watch.online_again_ms) == (10, 20)


async def test_the_fleet_is_ready_when_its_group_is_stable_with_all_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter([
        ("PreparingRebalance", ["supernet-f-w0"]),
        ("Stable", ["supernet-f-w0", "supernet-old-w1"]),  # a member of another fleet
        ("Stable", ["supernet-f-w1", "supernet-f-w0"]),
    ])  # fmt: skip
    asked: list[tuple[str, str]] = []

    async def group_clients(access: KafkaAccess, group: str) -> tuple[str, list[str]]:
        asked.append((access.username, group))
        return next(answers)

    monkeypatch.setattr(kafka, "group_clients", group_clients)
    monkeypatch.setattr(signals, "GROUP_POLL_S", 0.0)
    await signals.fleet_ready(KafkaAccess("b:1", "admin", "pw"), "g", "f", 2)
    assert asked == [("admin", "g")] * 3


def test_the_fleet_command_carries_every_setting_the_demo_chooses(tmp_path: Path) -> None:
    infra = dataclasses.replace(InfraSettings(), host="::1", kafka_port=29092, mqtt_port=21883)
    config = DemoConfig(out=tmp_path, workers=3, group="demo-g", receipts_topic="r.t",
                        metrics_port=0, infra_settings=infra)  # fmt: skip
    argv = steps.fleet_command(config, tmp_path / "net", tmp_path / "targets")
    assert argv[:3] == ["fleet", "--workers", "3"]
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    s = settings.load(parser.parse_args(argv[3:]), {})
    assert (s.bootstrap, s.mqtt_host, s.mqtt_port) == ("[::1]:29092", "::1", 21883)
    assert (s.group, s.receipts_topic, s.requests_topic) == ("demo-g", "r.t", "sms.requests")
    assert (s.network, s.metrics_port, s.log_format) == (str(tmp_path / "net"), 0, "json")
    assert s.instance == steps.instance()
    assert s.prometheus_targets == "", "no targets without metrics"
    assert "--requests-topic" in argv, "a default the demo relies on is written too"
