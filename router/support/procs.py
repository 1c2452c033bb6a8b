"""The one runner of background processes: started with their output in a log file,
stopped by pid with a deadline, asked whether they are alive and how they exited.

Two kinds share one way of starting (``spawn``) and one way of stopping (SIGTERM, then
SIGKILL past the deadline):

- ``Child``: a process that lives no longer than this one (the demo's fleet and carriers,
  a benchmark's workers, a test's processes). Its exit code is collected here, and its
  end can be awaited (``exited``) without polling: a pidfd becomes readable when it ends.
- ``Managed``: a broker that outlives the command that started it (``supernet infra up``),
  remembered by a pid file. The file holds the pid and the process's start time (from
  /proc), so that a pid reused by an unrelated process after a reboot is never mistaken
  for ours and never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

KILL_WAIT_S = 10.0  # after SIGKILL, how long to wait for the kernel to end the process


class InfraError(Exception):
    """A broker could not be installed, started, reached or stopped; the message says why."""


class ChildExited(Exception):
    """A child process ended while something waited for it to become ready."""


def spawn(
    argv: Sequence[str],
    log_file: Path,
    env: Mapping[str, str] | None = None,
    *,
    session: bool = False,
    fresh_log: bool = False,
) -> int:
    """Start ``argv`` (searched on PATH) with stdin from /dev/null and stdout and stderr
    appended to ``log_file`` (emptied first with ``fresh_log``); its pid. ``session``:
    in a session of its own, so that it outlives the terminal that started it.
    FileNotFoundError if the program does not exist."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # posix_spawn rather than Popen: a broker outlives this process on purpose, and a
    # Popen object would warn about (and want to wait for) a child it does not own.
    with log_file.open("wb" if fresh_log else "ab") as log:
        return os.posix_spawnp(
            argv[0],
            list(argv),
            dict(os.environ if env is None else env),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
            ],
            setsid=session,
        )


def _ended(pidfd: int, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: for ever) for the process to end."""
    readable, _, _ = select.select([pidfd], [], [], timeout)
    return bool(readable)


def _terminate(pidfd: int, timeout: float) -> None:
    """SIGTERM; SIGKILL if the process has not ended ``timeout`` seconds later."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    if not _ended(pidfd, timeout):
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _ended(pidfd, KILL_WAIT_S)


class Child:
    """A child process of this one, its output in a log file, stopped by its pid."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        fresh_log: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.pid = spawn(argv, log, env, fresh_log=fresh_log)
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code if it has ended (minus the signal's number if one killed it,
        as ``subprocess`` reports it), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid != 0:
                self._reaped(status)
        return self.returncode

    def alive(self) -> bool:
        return self.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, once it has ended; TimeoutError after ``timeout`` seconds."""
        if self.returncode is None:
            assert self._pidfd is not None
            if not _ended(self._pidfd, timeout):
                raise TimeoutError(f"{self.name} (pid {self.pid}) still runs after {timeout} s")
            self._reaped(os.waitpid(self.pid, 0)[1])
        return self.returncode  # type: ignore[return-value]  # set by _reaped

    async def exited(self) -> int:
        """The exit code, awaited without polling: the pidfd is readable once it ends."""
        if self.returncode is None:
            assert self._pidfd is not None
            loop = asyncio.get_running_loop()
            ended: asyncio.Future[None] = loop.create_future()
            fd = self._pidfd

            def readable() -> None:
                if not ended.done():
                    ended.set_result(None)

            loop.add_reader(fd, readable)
            try:
                await ended
            finally:
                loop.remove_reader(fd)
        return self.wait()

    def signal(self, sig: int) -> None:
        """Send ``sig``, unless it has ended."""
        if self.alive():
            assert self._pidfd is not None
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def stop(self, timeout: float) -> int:
        """SIGTERM and wait; SIGKILL past ``timeout`` seconds. The exit code."""
        if self.alive():
            assert self._pidfd is not None
            _terminate(self._pidfd, timeout)
        return self.wait()

    def _reaped(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def text(self) -> str:
        """What it has written so far (for people: errors quote its tail)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


async def ready_or_exited(child: Child, ready: Awaitable[T], timeout_s: float, what: str) -> T:
    """Await ``ready`` (a signal that ``child`` is ready); ChildExited if the child ends
    first, TimeoutError (naming ``what``) after ``timeout_s`` seconds. While this runs,
    nothing else may await ``child.exited()``."""
    signalled = asyncio.ensure_future(ready)
    ended = asyncio.ensure_future(child.exited())
    try:
        done, _ = await asyncio.wait(
            {signalled, ended}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (signalled, ended):
            task.cancel()
        await asyncio.wait({signalled, ended})
    if signalled in done:
        return signalled.result()
    if child.poll() is not None:
        raise ChildExited(
            f"{child.name} exited ({child.returncode}) before {what}; "
            f"log {child.log}:\n{child.tail()}"
        )
    raise TimeoutError(f"{child.name}: not {what} within {timeout_s:g} s; log {child.log}")


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

    def start(
        self, argv: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None
    ) -> int:
        """Start ``argv`` in its own session, output to ``log_file``; record its pid."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            pid = spawn(argv, log_file, env, session=True)  # not killed with `infra up`'s shell
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
        pidfd = None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                pidfd = os.pidfd_open(pid)
        # The pidfd pins the pid: checked again, it is ours and stays ours.
        if pid is None or pidfd is None or self.pid() != pid:
            if pidfd is not None:
                os.close(pidfd)
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            _terminate(pidfd, timeout)
        finally:
            os.close(pidfd)
        # Reap it if it is our own child (when `up` and `down` ran in one process).
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)
        return True


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass (for states that
    only an outside request can observe, such as a broker answering)."""
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
