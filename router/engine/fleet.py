"""`supernet fleet`: N workers as child processes, one consumer group.

The supervisor restarts a worker that exits on its own (after a short backoff that
grows only while the worker keeps failing quickly), passes SIGTERM and SIGINT on to
every worker, and exits once they have drained: 0 if every worker drained cleanly.
SIGHUP is passed on too: each worker reloads its network directory (``reload``).
With a liveness URL per slot (the worker's ``/healthz``, ``router.engine.probes``), the
supervisor also kills a worker that was alive and then fails ``Liveness.failures`` probes
in a row (a stuck event loop does not exit by itself); it is restarted like any other.
Each worker's stdout and stderr come back through pipes and are copied to the fleet's
own, one whole line at a time, so that two workers' JSON lines are never glued together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

import structlog

from router.support.backoff import Backoff

log = structlog.get_logger("router.engine.fleet")

RESTART_INITIAL_S = 0.2  # the wait before a restart, doubling per quick failure in a row
RESTART_CAP_S = 5.0
STABLE_S = 5.0  # a worker that ran this long resets its backoff
USAGE_ERROR = 2  # the exit code of a worker whose settings are wrong
# Signals a process raises against itself when it crashes: these count as its failures.
# Any other signal (SIGKILL, SIGTERM, ...) came from outside and the worker comes back
# after the first step: its partitions wait for it meanwhile.
CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL}
)
RESTARTS_ENV = "SUPERNET_WORKER_RESTARTS"  # how often the fleet restarted this slot before
WORKER_COMMAND = (sys.executable, "-m", "router", "worker")
LINE_LIMIT = 1 << 20  # bytes; a longer line is forwarded in pieces of this size
OUTPUT_GRACE_S = 2.0  # after a worker exits, how long its last lines may take to arrive


@dataclass(frozen=True)
class Liveness:
    """How the supervisor probes a worker's ``/healthz``: every ``every_s``; ``failures``
    in a row (no answer in ``timeout_s``, or not 200) after a first good one kill it."""

    every_s: float = 5.0
    failures: int = 6
    timeout_s: float = 2.0


def _alive(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Restarts:
    """When to restart one slot's worker, from how its last run ended.

    A run of ``STABLE_S`` or more starts the count of quick failures over (the restart
    comes after the first step); a worker killed from outside (any signal but a crash)
    comes back after the first step, neither counted nor resetting the count; any other
    exit is a quick failure, and the waits climb along ``backoff``.
    """

    def __init__(self, backoff: Backoff, first: Backoff) -> None:
        self.backoff = backoff  # counts the quick failures in a row
        self.first = first  # the same steps, for the first one's wait alone

    def delay(self, ran_s: float, exit_code: int) -> float:
        if ran_s >= STABLE_S:
            self.backoff.reset()
        elif exit_code >= 0 or -exit_code in CRASH_SIGNALS:
            return self.backoff.delay()
        # A stable run, or killed from outside: the first step, the count left as it is.
        self.first.reset()
        return self.first.delay()

    @property
    def failures(self) -> int:
        """Quick failures in a row (since the last stable run)."""
        return self.backoff.failures


async def forward_lines(reader: asyncio.StreamReader, out: IO[bytes], limit: int) -> None:
    """Copy ``reader`` to ``out`` until end of file, one whole line per write.

    A line longer than ``limit`` (at most the reader's) is cut into pieces of ``limit``
    bytes, each written with a newline; an unterminated last line gets one too.
    """
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:  # end of file
            if e.partial:
                _write(out, e.partial + b"\n")
            return
        except asyncio.LimitOverrunError as e:  # e.consumed > limit: the rest stays to read
            line = await reader.readexactly(min(e.consumed, limit)) + b"\n"
        _write(out, line)


def _write(out: IO[bytes], line: bytes) -> None:
    out.write(line)
    out.flush()


class Fleet:
    def __init__(
        self,
        workers: int,
        worker_args: Sequence[Sequence[str]],
        stop_grace_s: float,
        *,
        command: Sequence[str] = WORKER_COMMAND,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        line_limit: int = LINE_LIMIT,
        backoff: Callable[[], Backoff] = lambda: Backoff(RESTART_INITIAL_S, RESTART_CAP_S),
        health: Sequence[str | None] | None = None,
        liveness: Liveness = Liveness(),
    ) -> None:
        self.workers = workers
        self.worker_args = worker_args  # per slot: the arguments after `command`
        self.stop_grace_s = stop_grace_s
        self.command = command  # the worker program (a seam for tests)
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stderr = stderr if stderr is not None else sys.stderr.buffer
        self.line_limit = line_limit
        self.stop = asyncio.Event()
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = [0] * workers  # per slot
        self.backoff = backoff  # makes a slot's Backoffs
        self.health = list(health) if health is not None else [None] * workers  # per slot
        self.liveness = liveness

    async def _pipe(
        self, owner: contextlib.AsyncExitStack, child_ends: contextlib.ExitStack
    ) -> tuple[asyncio.StreamReader, int]:
        """A pipe for one output of a child: a reader of it, closed with ``owner``, and the
        descriptor the child writes to, closed with ``child_ends`` once the child has it."""
        read_fd, write_fd = os.pipe()
        child_ends.callback(os.close, write_fd)
        read_end = os.fdopen(read_fd, "rb", buffering=0)
        reader = asyncio.StreamReader(limit=self.line_limit)
        try:
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), read_end
            )
        except BaseException:
            read_end.close()
            raise
        owner.callback(transport.close)  # closes read_end too
        return reader, write_fd

    async def _run_once(self, i: int) -> tuple[int, int]:
        """Run slot ``i``'s worker once, forwarding its output; its pid and exit code."""
        async with contextlib.AsyncExitStack() as owner:
            with contextlib.ExitStack() as child_ends:
                out, out_fd = await self._pipe(owner, child_ends)
                err, err_fd = await self._pipe(owner, child_ends)
                proc = await asyncio.create_subprocess_exec(
                    *self.command, *self.worker_args[i], stdout=out_fd, stderr=err_fd,
                    env={**os.environ, RESTARTS_ENV: str(self.restarts[i])},
                )  # fmt: skip
            # The child holds the only write ends now: its exit is our end of file.
            self.procs[i] = proc
            log.info("worker started", slot=i, pid=proc.pid, restarts=self.restarts[i])
            if self.stop.is_set():  # the stop came while it was starting: pass it on too
                proc.send_signal(signal.SIGTERM)
            async with asyncio.TaskGroup() as tg:
                copies = [
                    tg.create_task(forward_lines(out, self.stdout, self.line_limit)),
                    tg.create_task(forward_lines(err, self.stderr, self.line_limit)),
                ]
                url = self.health[i]
                watch = tg.create_task(self._watch(i, proc, url)) if url else None
                code = await proc.wait()
                if watch is not None:
                    watch.cancel()
                # A grandchild that inherited the pipes could keep them open for ever.
                _, late = await asyncio.wait(copies, timeout=OUTPUT_GRACE_S)
                for task in late:
                    task.cancel()
            return proc.pid, code

    async def _watch(self, i: int, proc: asyncio.subprocess.Process, url: str) -> None:
        """Kill slot ``i``'s worker once it was alive and then fails ``failures`` probes in
        a row; one never alive yet (still loading its network) is left to start."""
        live = self.liveness
        seen_alive = False
        failures = 0
        while proc.returncode is None:
            await asyncio.sleep(live.every_s)
            if await asyncio.to_thread(_alive, url, live.timeout_s):
                seen_alive, failures = True, 0
                continue
            if not seen_alive or self.stop.is_set():
                continue
            failures += 1
            if failures >= live.failures and proc.returncode is None:
                log.error("worker not alive; killing it", slot=i, pid=proc.pid, url=url,
                          failures=failures)  # fmt: skip
                proc.kill()
                return

    async def _supervise(self, i: int) -> int:
        restarts = Restarts(self.backoff(), self.backoff())
        while True:
            started = time.monotonic()
            pid, code = await self._run_once(i)
            if self.stop.is_set():
                log.info("worker stopped", slot=i, pid=pid, exit_code=code)
                return code
            if code == USAGE_ERROR:  # bad settings: a restart would fail the same way
                log.error("worker rejected its settings; stopping the fleet", slot=i, pid=pid)
                self.stop.set()
                return code
            ran_s = time.monotonic() - started
            delay = restarts.delay(ran_s, code)
            self.restarts[i] += 1
            log.error("worker exited; restarting", slot=i, pid=pid, exit_code=code,
                      ran_s=round(ran_s, 1), restart_in_s=round(delay, 3),
                      restarts=self.restarts[i])  # fmt: skip
            try:
                async with asyncio.timeout(delay):
                    await self.stop.wait()
                return code  # told to stop while waiting to restart
            except TimeoutError:
                pass

    async def _forward_stop(self) -> None:
        await self.stop.wait()
        for i, proc in self.procs.items():
            if proc.returncode is None:
                log.info("passing SIGTERM on", slot=i, pid=proc.pid)
                proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(self.stop_grace_s)
        for i, proc in self.procs.items():  # past the grace period: do not hang forever
            if proc.returncode is None:
                log.error("worker did not stop in time; killing it", slot=i, pid=proc.pid)
                proc.kill()

    def _forward_reload(self) -> None:
        for i, proc in self.procs.items():
            if proc.returncode is None:
                log.info("passing SIGHUP on", slot=i, pid=proc.pid)
                proc.send_signal(signal.SIGHUP)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward_reload)
        try:
            async with asyncio.TaskGroup() as tg:
                forward = tg.create_task(self._forward_stop())
                codes = await asyncio.gather(*(self._supervise(i) for i in range(self.workers)))
                forward.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        bad = [c for c in codes if c != 0]
        log.info("fleet stopped", workers=self.workers, restarts=sum(self.restarts),
                 unclean=len(bad))  # fmt: skip
        return 0 if not bad else 1
