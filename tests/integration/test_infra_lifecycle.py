"""`infra up` is idempotent and waits for a real answer; `down` leaves no process behind;
a port held by a process we did not start is refused with a clear error."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from router.support.infra_settings import InfraSettings
from router.support.procs import InfraError, port_open
from router.tools.infra import lifecycle
from router.tools.infra.brokers import Mosquitto
from tests.ports import free_port

pytestmark = pytest.mark.integration


def test_mosquitto_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    settings = dataclasses.replace(InfraSettings(), state_dir=tmp_path, mqtt_port=free_port())
    try:
        lifecycle.up(settings, ["mosquitto"])
        pid = Mosquitto(settings).proc.pid()
        assert pid is not None
        assert Mosquitto(settings).ready()
        assert lifecycle.status(settings, ["mosquitto"])
        lifecycle.up(settings, ["mosquitto"])  # again: nothing new starts
        assert Mosquitto(settings).proc.pid() == pid
    finally:
        lifecycle.down(settings, ["mosquitto"])
    assert not Path(f"/proc/{pid}").exists()
    assert not port_open(settings.host, settings.mqtt_port)
    assert not lifecycle.status(settings, ["mosquitto"])


def test_port_held_by_another_process_is_refused(tmp_path: Path, infra: InfraSettings) -> None:
    # The session's Mosquitto was started under another state directory: not ours here.
    settings = dataclasses.replace(infra, state_dir=tmp_path)
    with pytest.raises(InfraError, match="already in use"):
        lifecycle.up(settings, ["mosquitto"])


def test_cli_status_reports_the_running_brokers(infra: InfraSettings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "router", "infra", "status"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("kafka", "mosquitto", "prometheus"):
        assert name in result.stdout
