"""The one structlog set-up (called once, by each entry point: the worker, the fleet, the
carriers) and masking of phone numbers.

JSON lines in production, readable lines in a terminal, each with a UTC ISO timestamp.
Message bodies are never logged; destination numbers only masked. A warning or worse that
repeats is logged once per interval with a count (`RepeatFilter`), not once per
occurrence (unless the entry point turns that off, as the carriers and the fleet do).
The client libraries' own ``logging`` records (aiokafka, paho, aiomqtt) come out the same
way, as JSON or console lines with their logger's name, at warning and above; a few that
are part of normal start-up (``QUIET``) count as info.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

REPEAT_INTERVAL_S = 10.0  # default window of RepeatFilter
MAX_WINDOWS = 1_000  # past this many (event, level) pairs, forget the idle ones

_LEVEL_NAMES = {"warn": "warning", "exception": "error", "fatal": "critical"}
_WATCHED = frozenset({"warning", "error", "critical"})
_SUMMARY = "_repeat_summary"  # marks RepeatFilter.flush()'s own lines, which pass as they are
LIBRARIES = ("aiokafka", "paho", "aiomqtt")  # their records: warning and above, as ours
# (logger, start of message) of library records that are normal at start-up, not errors:
# aiokafka asks for the group coordinator before Kafka has made its offsets topic.
QUIET = (("aiokafka", "Group Coordinator Request failed: [Error 15]"),)


class _Quiet(logging.Filter):
    """Counts the ``QUIET`` records as info: shown only at that level or below."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and any(
            record.name.startswith(name) and record.getMessage().startswith(start)
            for name, start in QUIET
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return record.levelno >= self.threshold


def mask(number: str) -> str:
    """``+447700900123`` -> ``+4477*****123``: country and operator stay readable."""
    if len(number) <= 7:
        return "*" * len(number)
    return number[:5] + "*" * (len(number) - 8) + number[-3:]


@dataclass(slots=True)
class _Window:
    since: float  # when the line that opened this window was logged
    suppressed: int = 0  # occurrences dropped since


class RepeatFilter:
    """structlog processor: a warning or worse that repeats is logged once per interval.

    The first occurrence of an (event, level) pair passes; repeats within ``interval_s``
    of it are dropped and counted. The first occurrence after the interval passes as
    ``"<event> (repeated N times in the last T s)"`` with ``repeated=N`` (N: the lines
    dropped, T: the seconds since the last line shown), and opens the next interval.
    There is no timer thread, so a count still open when the process stops is logged
    by `flush`. Info and debug pass untouched.

    Hand-written rather than a library: structlog (26.1) has no rate-limiting or
    de-duplicating processor, and the rate-limiting packages found filter stdlib
    ``logging`` records, not structlog event dicts. This is a dict and a counter.
    """

    def __init__(
        self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if event_dict.pop(_SUMMARY, False):
            return event_dict
        level = _LEVEL_NAMES.get(method_name, method_name)
        if level not in _WATCHED:
            return event_dict
        key = (str(event_dict.get("event")), level)
        now = self.clock()
        window = self._windows.get(key)
        if window is not None and now - window.since < self.interval_s:
            window.suppressed += 1
            raise structlog.DropEvent
        if window is not None and window.suppressed:
            event_dict["event"] = _summary(key[0], window.suppressed, now - window.since)
            event_dict["repeated"] = window.suppressed
        elif window is None and len(self._windows) >= MAX_WINDOWS:
            self._forget_idle(now)
        self._windows[key] = _Window(now)
        return event_dict

    def _forget_idle(self, now: float) -> None:
        self._windows = {
            k: w
            for k, w in self._windows.items()
            if w.suppressed or now - w.since < self.interval_s
        }

    def flush(self, logger: FilteringBoundLogger) -> None:
        """Log, through ``logger``, every count still open, and forget them."""
        now = self.clock()
        pending = [(k, w) for k, w in self._windows.items() if w.suppressed]
        for (event, level), window in pending:
            del self._windows[(event, level)]
            logger.log(
                logging.getLevelNamesMapping()[level.upper()],
                _summary(event, window.suppressed, now - window.since),
                repeated=window.suppressed,
                **{_SUMMARY: True},
            )


def _summary(event: str, times: int, over_s: float) -> str:
    span = round(over_s) if over_s >= 10 else round(over_s, 1)
    return f"{event} (repeated {times} time{'s' if times != 1 else ''} in the last {span} s)"


_repeats: RepeatFilter | None = None  # the configured one, for flush()


def resolve_format(fmt: Literal["auto", "json", "console"]) -> Literal["json", "console"]:
    """``auto``: console on a terminal, JSON otherwise."""
    if fmt == "auto":
        return "console" if sys.stderr.isatty() else "json"
    return fmt


def configure(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    repeat_interval_s: float | None = REPEAT_INTERVAL_S,
) -> None:
    """Log to stderr from now on; ``repeat_interval_s=None`` logs every repeat too."""
    global _repeats
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if resolve_format(fmt) == "console"
        else structlog.processors.JSONRenderer()
    )
    _repeats = RepeatFilter(repeat_interval_s) if repeat_interval_s is not None else None
    # Not through the RepeatFilter: it drops a repeat by raising structlog's DropEvent, a
    # BaseException that logging does not catch, so it would end the library task that
    # logged (aiokafka's, while Kafka is down: the worker never reconnected).
    _route_libraries(logging.StreamHandler(sys.stderr), renderer, level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *([_repeats] if _repeats is not None else []),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _route_libraries(
    handler: logging.Handler, renderer: structlog.types.Processor, level: str
) -> None:
    """The root logger writes the libraries' records to ``handler``, rendered as ours."""
    threshold = logging.getLevelNamesMapping()[level.upper()]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(_Quiet(threshold))
    logging.getLogger().handlers = [handler]
    for name in LIBRARIES:  # their debug only when asked for; their info is chatter
        logging.getLogger(name).setLevel(
            logging.DEBUG if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
        )


def libraries_to(path: Path, level: str = "info") -> None:
    """For a command whose terminal shows its own story (the demo): the client
    libraries' records go to ``path`` as JSON lines, not to the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _route_libraries(logging.FileHandler(path), structlog.processors.JSONRenderer(), level)


def flush() -> None:
    """Log the repeat counts still open; call it once at shutdown, after the last line."""
    if _repeats is not None:
        _repeats.flush(structlog.get_logger("router.support.logs"))
