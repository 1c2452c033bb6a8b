"""What the pipeline holds across messages, shared by its steps (``intake``, ``submits``,
``outcomes``, ``reports``): its collaborators, the submits awaiting an answer and their
deadlines, the held requests, the messages in flight by id, and what the carriers' side
last said (the transport's epoch, carriers' status changes).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from router.core.decision import Decision, Router
from router.core.policy import CLASS_INDEX
from router.engine.attempts import AttemptMemory
from router.engine.metrics import Metrics
from router.engine.offsets import OffsetTracker
from router.engine.pipeline.message import Message, Sink
from router.engine.transports.base import Submitter


class State:
    def __init__(
        self,
        router: Router,
        carriers: dict[str, Any],
        link: Submitter,
        sink: Sink,
        tracker: OffsetTracker[Any],
        metrics: Metrics,
        *,
        submit_timeout_s: float,
        max_attempts: int,
        hold_limit_s: float = 30.0,
        memory: AttemptMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.router = router
        self.carriers = carriers
        self.link = link  # the carrier transport's outbox
        self.sink = sink
        self.tracker = tracker
        self.metrics = metrics
        self.submit_timeout_s = submit_timeout_s
        self.max_attempts = max_attempts
        self.hold_limit_s = hold_limit_s
        # Not ``memory or ...``: an empty memory has length 0, so it is falsy.
        self.memory = memory if memory is not None else AttemptMemory(300.0, 200_000)
        self.clock = clock
        self.wall_ms = wall_ms
        self.awaiting: dict[tuple[str, int], list[Message]] = {}
        # (deadline, message id, attempt): the answer to a published ask is due then. Keys,
        # not messages: an answered message must not live on here until its deadline (at
        # thousands a second, ten seconds of them survived into the collector's oldest
        # generation, and each full collection walked them all).
        self.timeouts: deque[tuple[float, str, int]] = deque()
        self.held: deque[Message] = deque()
        self.active: dict[str, Message] = {}  # message id -> its message in flight here
        # When a silence proves nothing: the link reconnected (epoch), or the carrier went
        # offline or was announced again since the submit was asked.
        self.link_epoch = 0
        self.changed_at: dict[str, float] = {}  # carrier -> last status or directory change
        self.offline: set[str] = set()
        self.decision_time = 0.0  # seconds spent in routing decisions since last read
        # Ask numbers, from a random start so that two owners of one partition (before and
        # after a rebalance or a crash) do not number their asks alike.
        self.next_ask = itertools.count(secrets.randbits(40) + 1).__next__
        self.decisions = 0

    def _decide(self, m: Message, now: float) -> Decision:
        r = m.request
        return self.router.decide(r.to, r.body, CLASS_INDEX[r.cls], r.max_price, now)

    def _expired(self, m: Message) -> bool:
        return m.deadline_ms is not None and self.wall_ms() > m.deadline_ms
