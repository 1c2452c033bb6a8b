"""The fleet: restart backoff, stop, whole-line output, static group membership per slot.

The end-to-end tests run the real supervisor over fake workers (small Python scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from router.cli import build_parser, main
from router.cli.worker import fleet_worker_args, group_instance_ids
from router.engine import fleet as fleet_mod
from router.engine import settings as settings_mod
from router.engine.fleet import (
    RESTART_CAP_S,
    RESTART_INITIAL_S,
    STABLE_S,
    Fleet,
    Restarts,
    forward_lines,
)
from router.support.backoff import Backoff

# --- restart backoff ----------------------------------------------------------------------

STEPS = (0.2, 0.4, 0.8, 1.6, 3.2, 5.0)  # Backoff(0.2, 5.0) at the top of its jitter


def top() -> Backoff:
    return Backoff(RESTART_INITIAL_S, RESTART_CAP_S, rng=lambda: 1.0)


def restarts() -> Restarts:
    return Restarts(top(), top())


def test_quick_failures_climb_to_5_s_and_stay_there() -> None:
    r = restarts()
    assert [r.delay(1.0, 1) for _ in range(8)] == [*STEPS, 5.0, 5.0]


def test_restart_waits_are_jittered_within_the_upper_half_of_each_step() -> None:
    low = Restarts(Backoff(0.2, 5.0, rng=lambda: 0.0), Backoff(0.2, 5.0, rng=lambda: 0.0))
    assert [low.delay(1.0, 1) for _ in range(3)] == [0.1, 0.2, 0.4]


def test_a_run_of_stable_s_resets_the_backoff() -> None:
    r = restarts()
    for _ in range(4):
        r.delay(1.0, 1)
    assert r.delay(STABLE_S, 1) == 0.2
    assert r.failures == 0
    assert r.delay(STABLE_S - 0.01, 1) == 0.2  # the first quick failure after it
    assert r.delay(STABLE_S - 0.01, 1) == 0.4


def test_a_worker_killed_every_10_s_comes_back_after_the_first_step_each_time() -> None:
    r = restarts()
    for _ in range(20):
        assert r.delay(10.0, -signal.SIGKILL) == 0.2


def test_a_kill_from_outside_neither_counts_nor_resets_quick_failures() -> None:
    r = restarts()
    for _ in range(3):
        r.delay(0.5, 1)
    assert r.delay(0.5, -signal.SIGKILL) == 0.2
    assert r.delay(0.5, -signal.SIGTERM) == 0.2
    assert r.failures == 3
    assert r.delay(0.5, 1) == 1.6


def test_a_crash_by_signal_counts_as_a_failure() -> None:
    r = restarts()
    assert r.delay(0.5, -signal.SIGSEGV) == 0.2
    assert r.delay(0.5, -signal.SIGABRT) == 0.4
    assert r.failures == 2


def expected_delays(exits: Sequence[tuple[float, int]]) -> list[float]:
    """The rule, restated by brute force: after each exit, count the quick failures
    since the last stable run, ignoring kills from outside."""
    out = []
    for k, (ran_s, code) in enumerate(exits):
        if ran_s >= STABLE_S or (code < 0 and -code not in fleet_mod.CRASH_SIGNALS):
            out.append(STEPS[0])
            continue
        quick = 0
        for before_s, before_code in reversed(exits[: k + 1]):
            if before_s >= STABLE_S:
                break
            if before_code >= 0 or -before_code in fleet_mod.CRASH_SIGNALS:
                quick += 1
        out.append(STEPS[min(quick - 1, len(STEPS) - 1)])
    return out


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 1.0, STABLE_S - 0.01, STABLE_S, 10.0, 3600.0]),
            st.sampled_from([0, 1, 3, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGSEGV]),
        ),
        max_size=30,
    )
)
def test_backoff_follows_the_rule_for_any_history(exits: list[tuple[float, int]]) -> None:
    r = restarts()
    assert [r.delay(ran_s, code) for ran_s, code in exits] == expected_delays(exits)


# --- forwarding lines ---------------------------------------------------------------------


async def forwarded(chunks: Sequence[bytes], limit: int) -> bytes:
    reader = asyncio.StreamReader(limit=limit)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    out = io.BytesIO()
    await forward_lines(reader, out, limit)
    return out.getvalue()


async def test_lines_split_across_reads_come_out_whole() -> None:
    assert await forwarded([b'{"a":', b' 1}\n{"b"', b": 2}\n"], limit=64) == (
        b'{"a": 1}\n{"b": 2}\n'
    )


async def test_an_unterminated_last_line_gets_its_newline() -> None:
    assert await forwarded([b"one\ntwo"], limit=64) == b"one\ntwo\n"
    assert await forwarded([], limit=64) == b""


@pytest.mark.parametrize("tail", [b"\n", b"end\n", b""])  # b"": end of file ends the line
async def test_a_line_past_the_limit_comes_out_in_pieces_of_lines(tail: bytes) -> None:
    long = bytes(range(48, 58)) * 10  # 100 bytes, no newline
    out = await forwarded([b"short\n", long[:30], long[30:] + tail], limit=16)
    assert out.startswith(b"short\n")
    assert out.endswith(b"\n")
    pieces = out.removeprefix(b"short\n").removesuffix(b"\n").split(b"\n")
    assert all(0 < len(p) <= 16 for p in pieces)
    assert b"".join(pieces) == long + tail.removesuffix(b"\n")


# --- the fleet, over fake workers ---------------------------------------------------------


class LineSink(io.BytesIO):
    """A fleet output that can be awaited for its n-th line."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def flush(self) -> None:
        super().flush()
        self.changed.set()

    def lines(self) -> list[bytes]:
        return self.getvalue().splitlines()

    async def wait_lines(self, n: int) -> list[bytes]:
        async with asyncio.timeout(60):
            while len(self.lines()) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.lines()


def fake_fleet(script: str, workers: int, **kw: Any) -> tuple[Fleet, LineSink, LineSink]:
    out, err = LineSink(), LineSink()
    fleet = Fleet(
        workers,
        [[str(i)] for i in range(workers)],
        stop_grace_s=10.0,
        command=(sys.executable, "-c", script),
        stdout=out,
        stderr=err,
        **{"backoff": top, **kw},
    )
    return fleet, out, err


CHATTY = """
import json, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
slot = int(sys.argv[1])
for n in range(40):
    for stream, name in ((sys.stdout, "out"), (sys.stderr, "err")):
        pad = "x" * (n * 7919 % 150_000)
        stream.write(json.dumps({"slot": slot, "stream": name, "n": n, "pad": pad}) + "\\n")
sys.stdout.flush()
signal.pause()
"""


async def test_two_workers_long_json_lines_come_out_whole_on_their_own_streams() -> None:
    fleet, out, err = fake_fleet(CHATTY, workers=2)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(fleet.run())
        for sink, name in ((out, "out"), (err, "err")):
            records = [json.loads(line) for line in await sink.wait_lines(80)]
            assert {(r["slot"], r["n"]) for r in records} == {
                (slot, n) for slot in (0, 1) for n in range(40)
            }
            assert all(r["stream"] == name for r in records)
            assert all(len(r["pad"]) == r["n"] * 7919 % 150_000 for r in records)
        fleet.stop.set()
    assert run.result() == 0
    assert len(out.lines()) == len(err.lines()) == 80


RESTARTING = """
import json, os, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
restarts = int(os.environ["SUPERNET_WORKER_RESTARTS"])
print(json.dumps({"argv": sys.argv[1:], "restarts": restarts}), flush=True)
if restarts < 2:
    sys.exit(1)
signal.pause()
"""


async def test_a_failing_slot_restarts_with_the_same_arguments_and_its_restart_count() -> None:
    fleet, out, _ = fake_fleet(RESTARTING, workers=1)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(fleet.run())
            runs = [json.loads(line) for line in await out.wait_lines(3)]
            fleet.stop.set()
    assert run.result() == 0
    assert runs == [{"argv": ["0"], "restarts": n} for n in range(3)]
    restarts = [e for e in logs if e["event"] == "worker exited; restarting"]
    assert [(e["slot"], e["exit_code"], e["restart_in_s"], e["restarts"]) for e in restarts] == [
        (0, 1, 0.2, 1),
        (0, 1, 0.4, 2),
    ]
    assert all(isinstance(e["pid"], int) and e["ran_s"] < STABLE_S for e in restarts)
    assert fleet.restarts == [2]


UP = """
import os, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("up", os.environ["SUPERNET_WORKER_RESTARTS"], flush=True)
signal.pause()
"""


async def test_a_worker_killed_from_outside_comes_back_after_the_first_step() -> None:
    fleet, out, _ = fake_fleet(UP, workers=2)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(fleet.run())
            await out.wait_lines(2)
            killed = fleet.procs[1].pid
            os.kill(killed, signal.SIGKILL)
            lines = await out.wait_lines(3)
            fleet.stop.set()
    assert run.result() == 0
    assert sorted(lines) == [b"up 0", b"up 0", b"up 1"]
    [restart] = [e for e in logs if e["event"] == "worker exited; restarting"]
    assert restart["slot"] == 1
    assert restart["pid"] == killed
    assert restart["exit_code"] == -signal.SIGKILL
    assert restart["restart_in_s"] == 0.2
    assert fleet.restarts == [0, 1]


async def test_a_worker_that_rejects_its_settings_stops_the_fleet() -> None:
    fleet, _, _ = fake_fleet("import sys; sys.exit(2)", workers=1)
    with structlog.testing.capture_logs() as logs:
        assert await fleet.run() == 1
    events = [e["event"] for e in logs]
    assert "worker rejected its settings; stopping the fleet" in events
    assert "worker exited; restarting" not in events


FAILS_AT_ONCE = """
import sys
print("up", flush=True)
sys.exit(1)
"""


async def test_a_stop_while_a_slot_waits_to_restart_ends_the_wait() -> None:
    slow = lambda: Backoff(60.0, 60.0, rng=lambda: 1.0)  # noqa: E731
    fleet, out, _ = fake_fleet(FAILS_AT_ONCE, workers=1, backoff=slow)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:  # far less than 60 s
            run = tg.create_task(fleet.run())
            await out.wait_lines(1)
            while not any(e["event"] == "worker exited; restarting" for e in logs):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            fleet.stop.set()
    assert run.result() == 1  # the last exit was not clean
    assert out.lines() == [b"up"]  # never started again
    assert fleet.restarts == [1]


IGNORES_SIGTERM = """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
signal.pause()
"""


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    fleet, out, _ = fake_fleet(IGNORES_SIGTERM, workers=1)
    fleet.stop_grace_s = 0.2
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            run = tg.create_task(fleet.run())
            await out.wait_lines(1)
            fleet.stop.set()
    assert run.result() == 1
    assert "worker did not stop in time; killing it" in [e["event"] for e in logs]
    assert fleet.procs[0].returncode == -signal.SIGKILL


LEAVES_A_GRANDCHILD = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
sys.exit(2)
"""


async def test_forwarding_ends_when_the_worker_exits_even_if_its_pipes_live_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet_mod, "OUTPUT_GRACE_S", 0.2)
    fleet, out, _ = fake_fleet(LEAVES_A_GRANDCHILD, workers=1)
    try:
        async with asyncio.timeout(30):  # the grandchild holds stdout for 60 s
            assert await fleet.run() == 1
    finally:
        for line in out.lines():
            os.kill(int(line), signal.SIGKILL)
    assert len(out.lines()) == 1


# --- static group membership --------------------------------------------------------------


def fleet_args(
    *argv: str, environ: dict[str, str] | None = None
) -> tuple[argparse.Namespace, settings_mod.WorkerSettings]:
    args = build_parser().parse_args(["fleet", *argv])
    return args, settings_mod.load(args, environ or {})


def flag_values(argv: Sequence[str], flag: str) -> list[str]:
    return [argv[k + 1] for k, a in enumerate(argv) if a == flag]


def test_each_slot_is_a_static_member_named_after_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    per_slot = fleet_worker_args(*fleet_args("--workers", "3", "--group", "g", "--instance", "f"))
    assert [flag_values(a, "--group-instance-id") for a in per_slot] == [
        ["box-slot-0"],
        ["box-slot-1"],
        ["box-slot-2"],
    ]
    assert [flag_values(a, "--instance") for a in per_slot] == [["f-w0"], ["f-w1"], ["f-w2"]]
    assert all(flag_values(a, "--group") == ["g"] for a in per_slot)


def test_instance_prefix_replaces_the_host_name() -> None:
    per_slot = fleet_worker_args(*fleet_args("--workers", "2", "--instance-prefix", "rack2.a"))
    assert [flag_values(a, "--group-instance-id") for a in per_slot] == [
        ["rack2.a-slot-0"],
        ["rack2.a-slot-1"],
    ]


@pytest.mark.parametrize("prefix", ["", "has space", "slash/y", "x" * 243])
def test_a_prefix_kafka_would_refuse_is_an_error(prefix: str) -> None:
    with pytest.raises(settings_mod.SettingsError, match="Kafka refuses"):
        group_instance_ids(prefix, 2)


def test_the_longest_prefix_kafka_takes_is_accepted() -> None:
    assert len(group_instance_ids("x" * 242, 10)[-1]) == 249


def test_one_group_instance_id_for_several_workers_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fleet", "--workers", "2", "--group-instance-id", "mine"]) == 2
    assert "2 workers cannot share one static member id" in capsys.readouterr().err
    with pytest.raises(settings_mod.SettingsError, match="cannot share"):
        fleet_worker_args(
            *fleet_args("--workers", "3", environ={"SUPERNET_GROUP_INSTANCE_ID": "mine"})
        )


def test_one_worker_keeps_the_group_instance_id_the_user_gave() -> None:
    [argv] = fleet_worker_args(*fleet_args("--workers", "1", "--group-instance-id", "mine"))
    assert flag_values(argv, "--group-instance-id") == ["mine"]
    environ = {"SUPERNET_GROUP_INSTANCE_ID": "mine"}  # the worker inherits it
    [argv] = fleet_worker_args(*fleet_args("--workers", "1", environ=environ))
    assert flag_values(argv, "--group-instance-id") == []
    with pytest.raises(settings_mod.SettingsError, match="give one"):
        fleet_worker_args(
            *fleet_args("--workers", "1", "--group-instance-id", "a", "--instance-prefix", "b")
        )


def test_workers_get_a_definite_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    [argv] = fleet_worker_args(*fleet_args("--workers", "1"))
    assert flag_values(argv, "--log-format") == ["json"]
    [argv] = fleet_worker_args(*fleet_args("--workers", "1", "--log-format", "console"))
    assert flag_values(argv, "--log-format") == ["console"]


ANSWERS_SIGHUP = """
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGHUP, lambda *_: print("reload " + sys.argv[1], flush=True))
print("up", flush=True)
while True:
    signal.pause()
"""


async def test_sighup_to_the_fleet_is_passed_on_to_every_worker() -> None:
    fleet, out, _ = fake_fleet(ANSWERS_SIGHUP, workers=2)
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        run = tg.create_task(fleet.run())
        await out.wait_lines(2)  # both up: the fleet's handlers are in place
        os.kill(os.getpid(), signal.SIGHUP)
        lines = await out.wait_lines(4)
        fleet.stop.set()
    assert run.result() == 0
    assert sorted(line for line in lines if line.startswith(b"reload")) == [
        b"reload 0",
        b"reload 1",
    ]
