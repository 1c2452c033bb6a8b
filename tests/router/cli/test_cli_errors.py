"""First contact: a network that is not there is one line on stderr and exit 2, from the
worker and from the fleet (which then starts no worker to restart for ever)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("command", [["worker"], ["fleet", "--workers", "1"]])
def test_a_missing_network_is_one_line_and_exit_2(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-network"
    done = subprocess.run(
        [sys.executable, "-m", "router", *command, "--network", str(missing)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback, no wrapped line, no restart log
    assert lines[0].startswith("error: ")
    assert f"{missing}/network.json" in lines[0]
    assert "supernet network generate" in lines[0]
    assert "worker started" not in done.stdout + done.stderr
