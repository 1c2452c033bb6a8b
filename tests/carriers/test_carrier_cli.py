"""`supernet carriers` as a process, with no broker to reach: it logs through the one
logging set-up (router.support.logs: JSON lines with UTC ISO timestamps off a terminal),
keeps trying the broker, and stops cleanly on SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.carriers.carrier_helpers import truth
from tests.carriers.conftest import SmallNetwork
from tests.ports import free_port

PROGRAM = "import sys; from router.cli import main; sys.exit(main())"


def test_carriers_log_json_lines_with_utc_timestamps(
    small_network: SmallNetwork, tmp_path: Path
) -> None:
    directory = small_network([truth("c1")])
    argv = [sys.executable, "-c", PROGRAM, "carriers", "--network", str(directory),
            "--mqtt-host", "127.0.0.1", "--mqtt-port", str(free_port()), "--host-id", "t",
            "--security", "off", "--ledger", str(tmp_path / "ledger.json")]  # fmt: skip
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the data connection cannot reach the broker
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in (first + rest).decode().splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "broker unreachable; reconnecting with backoff"
    assert lines[0]["level"] == "warning"
    assert "carriers stopped" in events
    assert events[-1] == "ledger written"
    for line in lines:
        stamp = line["timestamp"]
        assert stamp.endswith("Z"), stamp
        assert before <= dt.datetime.fromisoformat(stamp) <= after
    assert (tmp_path / "ledger.json").exists()
