"""The fleet's liveness watch: a worker that was alive and then fails its ``/healthz``
probes is killed and restarted; one never alive yet is left to start."""

from __future__ import annotations

import asyncio
import sys

import structlog

from router.engine.fleet import Fleet, Liveness
from tests.ports import free_port
from tests.router.engine.test_fleet import UP, LineSink, fake_fleet, top

# A worker whose /healthz answers twice, then 503 for ever (a stuck event loop).
STUCK_AFTER_TWO = """
import http.server, sys, threading
answered = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global answered
        answered += 1
        self.send_response(200 if answered <= 2 else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("up", flush=True)
threading.Event().wait()
"""


async def test_a_worker_that_stops_being_alive_is_killed_and_restarted() -> None:
    port = free_port()
    out, err = LineSink(), LineSink()
    fleet = Fleet(
        1, [[str(port)]], stop_grace_s=10.0, command=(sys.executable, "-c", STUCK_AFTER_TWO),
        stdout=out, stderr=err, backoff=top,
        health=[f"http://127.0.0.1:{port}/healthz"], liveness=Liveness(every_s=0.1, failures=3),
    )  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(fleet.run())
            first = await out.wait_lines(1)
            pid = fleet.procs[0].pid
            async with asyncio.timeout(20):
                await out.wait_lines(2)  # killed after 3 failed probes, and started again
            fleet.stop.set()
    assert run.result() in (0, 1)
    assert first == [b"up"]
    [killed] = [e for e in logs if e["event"] == "worker not alive; killing it"]
    assert (killed["slot"], killed["pid"], killed["failures"]) == (0, pid, 3)
    assert fleet.restarts == [1]


async def test_a_worker_never_alive_yet_is_left_to_start() -> None:
    # Nothing answers on its port: a worker still loading its network is not killed.
    port = free_port()
    fleet, out, _ = fake_fleet(UP, workers=1, health=[f"http://127.0.0.1:{port}/healthz"],
                               liveness=Liveness(every_s=0.05, failures=2))  # fmt: skip
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(fleet.run())
        await out.wait_lines(1)
        await asyncio.sleep(0.5)
        fleet.stop.set()
    assert run.result() == 0
    assert fleet.restarts == [0]
