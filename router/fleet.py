"""`supernet fleet`: N workers as child processes, one consumer group.

The supervisor restarts a worker that exits on its own (a crash is loud and non-zero;
the restart waits a little longer after each quick failure), passes SIGTERM and SIGINT on
to every worker, and exits once they have drained: 0 if every worker drained cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Sequence

import structlog

log = structlog.get_logger("router.fleet")

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_S = 30.0  # a worker that ran this long resets its backoff
USAGE_ERROR = 2  # the exit code of a worker whose settings are wrong


class Fleet:
    def __init__(
        self, workers: int, worker_args: Sequence[Sequence[str]], stop_grace_s: float
    ) -> None:
        self.workers = workers
        self.worker_args = worker_args  # per worker: the `supernet worker` arguments
        self.stop_grace_s = stop_grace_s
        self.stop = asyncio.Event()
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0

    async def _spawn(self, i: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router", "worker", *self.worker_args[i]
        )
        self.procs[i] = proc
        log.info("worker started", worker=i, pid=proc.pid)
        return proc

    async def _supervise(self, i: int) -> int:
        failures = 0
        while True:
            started = time.monotonic()
            proc = await self._spawn(i)
            code = await proc.wait()
            if self.stop.is_set():
                log.info("worker stopped", worker=i, pid=proc.pid, exit_code=code)
                return code
            if code == USAGE_ERROR:  # bad settings: a restart would fail the same way
                log.error("worker rejected its settings; stopping the fleet", worker=i)
                self.stop.set()
                return code
            failures = 0 if time.monotonic() - started > STABLE_S else failures + 1
            delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            self.restarts += 1
            log.error("worker exited; restarting", worker=i, pid=proc.pid, exit_code=code,
                      restart_in_s=delay)  # fmt: skip
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
                log.info("passing SIGTERM on", worker=i, pid=proc.pid)
                proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(self.stop_grace_s)
        for i, proc in self.procs.items():  # past the grace period: do not hang forever
            if proc.returncode is None:
                log.error("worker did not stop in time; killing it", worker=i, pid=proc.pid)
                proc.kill()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        async with asyncio.TaskGroup() as tg:
            forward = tg.create_task(self._forward_stop())
            codes = await asyncio.gather(*(self._supervise(i) for i in range(self.workers)))
            forward.cancel()
        bad = [c for c in codes if c != 0]
        log.info("fleet stopped", workers=self.workers, restarts=self.restarts,
                 unclean=len(bad))  # fmt: skip
        return 0 if not bad else 1
