"""Pid-file process handling: only what we started is ever signalled."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from router.support.infra_settings import InfraSettings, host_in_url
from router.support.procs import InfraError, Managed, port_open


def test_start_and_stop_by_pid_file(tmp_path: Path) -> None:
    proc = Managed("sleeper", tmp_path / "sleeper.pid")
    pid = proc.start(["sleep", "60"], tmp_path / "sleeper.log")
    assert proc.pid() == pid
    assert proc.stop(timeout=5)
    assert proc.pid() is None
    assert not (tmp_path / "sleeper.pid").exists()
    assert not Path(f"/proc/{pid}").exists()


def test_reused_pid_is_not_ours(tmp_path: Path) -> None:
    """A pid file whose start time does not match belongs to a process we did not start."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = tmp_path / "stale.pid"
        pid_file.write_text(f"{victim.pid} 1\n")  # same pid, wrong start time
        proc = Managed("stale", pid_file)
        assert proc.pid() is None
        assert not proc.stop(timeout=1)
        assert victim.poll() is None, "a process we did not start was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    proc = Managed("ghost", tmp_path / "ghost.pid")
    with pytest.raises(InfraError, match="not found"):
        proc.start(["/nonexistent/supernet-ghost"], tmp_path / "ghost.log")


def test_stop_without_pid_file_is_harmless(tmp_path: Path) -> None:
    assert not Managed("none", tmp_path / "none.pid").stop(timeout=1)
    assert os.getpid() > 0


def test_ipv6_loopback_is_bracketed() -> None:
    assert host_in_url("::1") == "[::1]"
    assert host_in_url("127.0.0.1") == "127.0.0.1"


def test_port_open_sees_a_closed_port() -> None:
    assert not port_open("127.0.0.1", 1)


def test_settings_from_environment(tmp_path: Path) -> None:
    s = InfraSettings.from_env(
        {
            "SUPERNET_KAFKA_PORT": "39092",
            "SUPERNET_STATE_DIR": str(tmp_path),
            "SUPERNET_HOST": "::1",
        }
    )
    assert s.kafka_port == 39092
    assert s.state_dir == tmp_path
    assert s.kafka_bootstrap == "[::1]:39092"
    assert InfraSettings.from_env({}).mqtt_port == InfraSettings().mqtt_port


def test_bad_port_in_environment_names_the_variable() -> None:
    with pytest.raises(ValueError, match="SUPERNET_MQTT_PORT"):
        InfraSettings.from_env({"SUPERNET_MQTT_PORT": "eleven"})
