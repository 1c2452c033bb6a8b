"""Background processes that `supernet infra` starts, remembers by pid file, and stops.

A pid file holds the pid and the process's start time (from /proc), so that a pid reused
by an unrelated process after a reboot is never mistaken for ours and never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class InfraError(Exception):
    """A broker could not be installed, started, reached or stopped; the message says why."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited: it is not running
        return None
    return fields[19]  # field 22 of the whole line: starttime


@dataclass(frozen=True, slots=True)
class Managed:
    """A process known by its pid file."""

    name: str
    pid_file: Path

    def read(self) -> tuple[int, str] | None:
        try:
            pid_text, started = self.pid_file.read_text().split()
            return int(pid_text), started
        except (FileNotFoundError, ValueError):
            return None

    def pid(self) -> int | None:
        """The pid if the process we started is still running, else None."""
        entry = self.read()
        if entry is None:
            return None
        pid, started = entry
        return pid if _start_time(pid) == started else None

    def start(self, argv: Sequence[str], log_file: Path, env: dict[str, str] | None = None) -> int:
        """Start ``argv`` in its own session, output to ``log_file``; record its pid."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        # posix_spawn rather than Popen: the broker outlives this process on purpose, and a
        # Popen object would warn about (and want to wait for) a child it does not own.
        with log_file.open("ab") as log:
            try:
                pid = os.posix_spawnp(
                    argv[0],
                    list(argv),
                    dict(os.environ if env is None else env),
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                        (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
                    ],
                    setsid=True,  # not killed with the shell that ran `infra up`
                )
            except FileNotFoundError:
                raise InfraError(
                    f"{self.name}: {argv[0]} not found; run deploy/bootstrap.sh to install it"
                ) from None
        started = _start_time(pid)
        if started is None:
            raise InfraError(f"{self.name} exited at once; see {log_file}")
        self.pid_file.write_text(f"{pid} {started}\n")
        return pid

    def stop(self, timeout: float) -> bool:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: self.pid() is None, timeout, interval=0.1):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: self.pid() is None, 10.0, interval=0.05)
        # Reap it if it is our own child (when `up` and `down` ran in one process).
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)
        return True


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
