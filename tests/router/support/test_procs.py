"""The process runner: children with a log file, stopped by pid with a deadline, their
exit awaited without polling; pid-file processes, of which only what we started is ever
signalled."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.support.infra_settings import InfraSettings, host_in_url
from router.support.procs import (
    Child,
    ChildExited,
    InfraError,
    Managed,
    port_open,
    ready_or_exited,
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
    "print('up', flush=True); time.sleep(60)"  # fmt: skip


def test_a_child_writes_its_log_and_reports_its_exit_code(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("earlier run\n")
    child = Child("c", python("import sys; print('hello'); sys.exit(3)"), log, fresh_log=True)
    assert child.wait(timeout=30) == 3
    assert not child.alive()
    assert child.poll() == 3
    assert log.read_text() == "hello\n"
    again = Child("c", python("print('more')"), log)
    assert again.wait(timeout=30) == 0
    assert log.read_text() == "hello\nmore\n", "without fresh_log the log is appended to"


def test_stop_sends_sigterm_then_sigkill_past_the_deadline(tmp_path: Path) -> None:
    polite = Child("polite", ["sleep", "60"], tmp_path / "p.log")
    assert polite.alive()
    assert polite.stop(timeout=10) == -signal.SIGTERM
    stubborn = Child("stubborn", python(IGNORES_SIGTERM), tmp_path / "s.log")
    while "up" not in stubborn.text():  # its SIGTERM handler is in place once it says so
        assert stubborn.alive()
        time.sleep(0.01)
    assert stubborn.stop(timeout=0.5) == -signal.SIGKILL
    assert not Path(f"/proc/{stubborn.pid}").exists()
    assert stubborn.stop(timeout=1) == -signal.SIGKILL, "stopping again changes nothing"


def test_wait_with_a_timeout_raises_while_it_runs(tmp_path: Path) -> None:
    child = Child("sleeper", ["sleep", "60"], tmp_path / "s.log")
    with pytest.raises(TimeoutError, match="still runs"):
        child.wait(timeout=0.1)
    child.signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL


def test_a_missing_program_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Child("ghost", ["/nonexistent/supernet-ghost"], tmp_path / "g.log")


async def test_exited_is_awaited_without_blocking_the_loop(tmp_path: Path) -> None:
    child = Child("short", python("import time; time.sleep(0.3)"), tmp_path / "s.log")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    assert await asyncio.wait_for(child.exited(), 30) == 0
    ticker.cancel()
    assert ticks > 5, "the loop ran while the child was awaited"


async def test_ready_or_exited_returns_the_signal(tmp_path: Path) -> None:
    child = Child("server", ["sleep", "60"], tmp_path / "s.log")
    try:
        ready = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, ready.set)
        assert await ready_or_exited(child, ready.wait(), 30, "ready") is True
        assert child.alive()
    finally:
        child.stop(5)


async def test_ready_or_exited_fails_when_the_child_exits_first(tmp_path: Path) -> None:
    child = Child("crasher", python("print('bad config'); raise SystemExit(2)"), tmp_path / "c.log")
    never = asyncio.Event()
    with pytest.raises(ChildExited, match=r"crasher exited \(2\) before ready(.|\n)*bad config"):
        await ready_or_exited(child, never.wait(), 30, "ready")


async def test_ready_or_exited_times_out(tmp_path: Path) -> None:
    child = Child("slow", ["sleep", "60"], tmp_path / "s.log")
    try:
        with pytest.raises(TimeoutError, match=r"slow: not ready within 0\.2 s"):
            await ready_or_exited(child, asyncio.Event().wait(), 0.2, "ready")
        assert child.alive()
    finally:
        child.stop(5)


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
    assert not (tmp_path / "none.pid").exists()


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
