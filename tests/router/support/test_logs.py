"""The one logging set-up (the worker's and the carriers'): UTC ISO timestamps, JSON or
console lines, the level; and RepeatFilter: a warning that repeats is logged once per
interval, with a count."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import structlog
from structlog.testing import LogCapture
from structlog.typing import EventDict

from router.support.logs import MAX_WINDOWS, RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def emit(f: RepeatFilter, method: str, event: str, **kw: Any) -> EventDict | None:
    """What the filter passes on (None: dropped)."""
    try:
        return f(None, method, {"event": event, **kw})
    except structlog.DropEvent:
        return None


def test_repeats_within_the_interval_are_dropped_and_counted_on_the_next_line() -> None:
    clock = Clock()
    f = RepeatFilter(10.0, clock)
    assert emit(f, "warning", "carrier offline", carrier="a") == {
        "event": "carrier offline",
        "carrier": "a",
    }
    for t in (1.0, 5.0, 9.9):
        clock.now = t
        assert emit(f, "warning", "carrier offline", carrier="b") is None
    clock.now = 12.5
    assert emit(f, "warning", "carrier offline", carrier="c") == {
        "event": "carrier offline (repeated 3 times in the last 12 s)",
        "repeated": 3,
        "carrier": "c",  # the line shown is this occurrence
    }
    clock.now = 13.0  # the summary opened the next interval
    assert emit(f, "warning", "carrier offline") is None
    clock.now = 22.5
    line = emit(f, "warning", "carrier offline")
    assert line is not None
    assert line["event"] == "carrier offline (repeated 1 time in the last 10 s)"
    assert line["repeated"] == 1


def test_an_occurrence_after_a_quiet_interval_passes_unchanged() -> None:
    clock = Clock()
    f = RepeatFilter(10.0, clock)
    assert emit(f, "error", "commit failed") is not None
    clock.now = 10.0
    assert emit(f, "error", "commit failed") == {"event": "commit failed"}


def test_info_and_debug_pass_every_time() -> None:
    f = RepeatFilter(10.0, Clock())
    for _ in range(3):
        assert emit(f, "info", "tick", n=1) == {"event": "tick", "n": 1}
        assert emit(f, "debug", "tock") == {"event": "tock"}


def test_each_event_and_level_has_its_own_count() -> None:
    clock = Clock()
    f = RepeatFilter(10.0, clock)
    assert emit(f, "warning", "a") is not None
    assert emit(f, "error", "a") is not None  # same event, other level
    assert emit(f, "warning", "b") is not None  # other event
    assert emit(f, "warn", "a") is None  # warn is warning
    assert emit(f, "exception", "a") is None  # exception is error
    assert emit(f, "critical", "a") is not None
    assert emit(f, "fatal", "a") is None  # fatal is critical
    clock.now = 10.0
    warning, error, other = emit(f, "warning", "a"), emit(f, "error", "a"), emit(f, "warning", "b")
    assert warning is not None
    assert warning["repeated"] == 1
    assert error is not None
    assert error["repeated"] == 1
    assert other == {"event": "b"}


def logger(f: RepeatFilter, capture: LogCapture) -> Any:
    return structlog.wrap_logger(
        None,
        processors=[f, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )


def test_flush_logs_the_open_counts_at_their_level_and_forgets_them() -> None:
    clock = Clock()
    f = RepeatFilter(10.0, clock)
    capture = LogCapture()
    log = logger(f, capture)
    for _ in range(4):
        log.warning("broker unreachable", broker="k1")
    log.error("receipt refused")
    log.error("receipt refused")
    log.error("lonely")  # nothing suppressed: nothing to summarise
    clock.now = 2.5
    f.flush(log)
    assert capture.entries[-2:] == [
        {
            "event": "broker unreachable (repeated 3 times in the last 2.5 s)",
            "repeated": 3,
            "log_level": "warning",
        },
        {
            "event": "receipt refused (repeated 1 time in the last 2.5 s)",
            "repeated": 1,
            "log_level": "error",
        },
    ]
    assert len(capture.entries) == 5
    f.flush(log)  # nothing open any more
    assert len(capture.entries) == 5
    clock.now = 3.0
    log.warning("broker unreachable")  # flushed: a first occurrence again
    assert capture.entries[-1] == {"event": "broker unreachable", "log_level": "warning"}


def test_forgetting_idle_events_keeps_the_counts_still_open() -> None:
    clock = Clock()
    f = RepeatFilter(10.0, clock)
    assert emit(f, "warning", "x") is not None
    assert emit(f, "warning", "x") is None
    for n in range(MAX_WINDOWS):
        assert emit(f, "warning", f"event {n}") is not None
    clock.now = 11.0
    assert emit(f, "warning", "one more") is not None  # past the limit: idle ones go
    assert emit(f, "warning", "event 0") == {"event": "event 0"}
    line = emit(f, "warning", "x")
    assert line is not None
    assert line["repeated"] == 1


SCRIPT = """
import sys
import structlog
from router.support import logs

logs.configure(**{"fmt": "json", "level": "info", **eval(sys.argv[1])})
log = structlog.get_logger("t")
for n in range(5):
    log.warning("broker unreachable", n=n)
for _ in range(3):
    log.info("tick")
logs.flush()
"""


def run_logging_raw(configure_kw: str) -> list[str]:
    """stderr's lines of SCRIPT, with ``logs.configure`` called with these keywords."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, configure_kw], capture_output=True, check=True, timeout=60
    )
    return done.stderr.decode().splitlines()


def run_logging(configure_kw: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run_logging_raw(configure_kw)]


def test_configure_summarises_repeats_by_default() -> None:
    lines = run_logging("{}")
    events = [(line["event"], line.get("n"), line.get("repeated")) for line in lines]
    assert events[:4] == [("broker unreachable", 0, None)] + [("tick", None, None)] * 3
    assert len(events) == 5
    assert events[4][0].startswith("broker unreachable (repeated 4 times in the last ")
    assert events[4][2] == 4
    assert lines[4]["level"] == "warning"
    assert "timestamp" in lines[4]


def test_configure_without_an_interval_logs_every_repeat() -> None:
    lines = run_logging("{'repeat_interval_s': None}")
    warnings = [line["n"] for line in lines if line["event"] == "broker unreachable"]
    assert warnings == [0, 1, 2, 3, 4]
    assert not any("repeated" in line for line in lines)


def _utc(stamp: str) -> dt.datetime:
    """An ISO timestamp that says it is UTC (``Z``), as an aware datetime."""
    assert stamp.endswith("Z"), stamp
    parsed = dt.datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == dt.timedelta(0)
    return parsed


def test_every_line_has_a_utc_iso_timestamp() -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    lines = run_logging("{'repeat_interval_s': None}")
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert len(lines) == 8
    assert all(before <= _utc(line["timestamp"]) <= after for line in lines)


def test_the_console_format_has_the_same_timestamps_and_no_colours_off_a_terminal() -> None:
    lines = run_logging_raw("{'fmt': 'console', 'repeat_interval_s': None}")
    assert len(lines) == 8
    stamp, rest = lines[0].split(" ", 1)
    assert _utc(stamp).year >= 2024
    assert "broker unreachable" in rest
    assert "n=0" in rest
    assert "\x1b[" not in "".join(lines)  # stderr is a pipe here


def test_the_level_filters_what_is_logged() -> None:
    lines = run_logging("{'level': 'warning', 'repeat_interval_s': None}")
    assert [line["event"] for line in lines] == ["broker unreachable"] * 5


LIBRARY_SCRIPT = """
import logging
import sys
from router.support import logs

logs.configure(fmt="json", level=sys.argv[1])  # with the repeat filter on, as a worker has it
kafka = logging.getLogger("aiokafka.consumer.group_coordinator")
kafka.info("Discovered coordinator 1 for group g")  # chatter: below warning
kafka.error("Group Coordinator Request failed: [Error 15] CoordinatorNotAvailableError")
kafka.error("Unexpected error in fetcher routine")
logging.getLogger("paho.mqtt.client").warning("connection lost")
# A library record that repeats must not raise into the library (structlog's DropEvent is
# a BaseException: it ended aiokafka's tasks while Kafka was down). Each one is shown.
for _ in range(3):
    logging.getLogger("aiokafka").error("Unable to update metadata from [1]")
print("survived", file=sys.stderr)
"""


def run_library_logging(level: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_SCRIPT, level], capture_output=True, check=True, timeout=60
    )
    *lines, last = done.stderr.decode().splitlines()
    assert last == "survived"
    return [json.loads(line) for line in lines]


def test_library_records_are_json_lines_with_their_logger_and_level() -> None:
    lines = run_library_logging("info")
    got = [(line["logger"], line["level"], line["event"][:30]) for line in lines]
    assert (
        got
        == [
            # start-up noise counts as info, not as an error on the terminal
            ("aiokafka.consumer.group_coordinator", "info", "Group Coordinator Request fail"),
            ("aiokafka.consumer.group_coordinator", "error", "Unexpected error in fetcher ro"),
            ("paho.mqtt.client", "warning", "connection lost"),
        ]
        + [("aiokafka", "error", "Unable to update metadata from")] * 3
    )
    assert all("timestamp" in line for line in lines)


def test_library_start_up_noise_is_not_shown_at_warning() -> None:
    lines = run_library_logging("warning")
    assert [line["event"][:10] for line in lines] == ["Unexpected", "connection"] + [
        "Unable to "
    ] * 3


def test_libraries_to_a_file_keeps_the_terminal_clean(tmp_path: Path) -> None:
    script = (
        "import logging, sys; from pathlib import Path; from router.support import logs; "
        "logs.libraries_to(Path(sys.argv[1])); "
        "logging.getLogger('aiokafka').error('Unexpected error in fetcher routine')"
    )
    log = tmp_path / "logs" / "demo.log"
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)], capture_output=True, check=True, timeout=60
    )
    assert done.stderr == b""
    [line] = [json.loads(x) for x in log.read_text().splitlines()]
    assert (line["logger"], line["level"]) == ("aiokafka", "error")
