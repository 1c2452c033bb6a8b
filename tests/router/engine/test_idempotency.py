"""One carrier per message, whatever happens: a hypothesis state machine over workers
that crash (losing everything but the durable attempts log), partitions that move,
producers that repeat ids, and carriers that accept, reject or never answer.

The carriers are modelled as the simulator behaves: each remembers the ids it accepted
and answers a repeat as a duplicate; a submit is either processed (its result may come
late) or dropped whole (an offline carrier). The invariant: no message id is accepted as
new by two carriers.
"""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from router.contracts.codes import Code
from router.engine.attempts import AttemptRecord
from tests.router.engine.fakes import GB_MULTI, PARTITION_NO, US_MULTI, World, request

IDS = [f"m{i}" for i in range(6)]
DESTINATIONS = {mid: (GB_MULTI if i % 2 else US_MULTI) for i, mid in enumerate(IDS)}


class Workers(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[AttemptRecord] = []  # the durable attempts log
        self.accepted_by: dict[str, set[str]] = {}  # id -> carriers that accepted it as new
        self.carrier_memory: set[tuple[str, str]] = set()  # (carrier, id) accepted
        self.rng = random.Random(0)
        self.world = self._new_world()
        self.answered: set[int] = set()

    def _new_world(self) -> World:
        w = World(submit_timeout_s=1.0, max_attempts=3)
        w.pipeline.restore(PARTITION_NO, list(self.log))
        # Attempt records become durable when the test acks them: keep them in the log.
        real = w.sink.attempt

        def attempt(record: AttemptRecord, partition: int, on_durable: object) -> None:
            def durable() -> None:
                self.log.append(record)
                if callable(on_durable):
                    on_durable()

            real(record, partition, durable)

        w.sink.attempt = attempt  # type: ignore[method-assign]
        return w

    @rule(mid=st.sampled_from(IDS))
    def take(self, mid: str) -> None:
        """A request read (first time, re-read after a crash, or a producer's repeat)."""
        self.world.take(request(id=mid, to=DESTINATIONS[mid]))

    @rule(mid=st.sampled_from(IDS))
    def take_while_kafka_is_slow(self, mid: str) -> None:
        """Attempt records written from now on wait for ``attempts_durable``."""
        self.world.sink.hold_attempts = True
        self.take(mid)

    @rule()
    def attempts_durable(self) -> None:
        self.world.sink.hold_attempts = False
        self.world.sink.ack_attempts()

    @rule()
    def kafka_acks(self) -> None:
        self.world.sink.ack_all()

    @precondition(lambda self: len(self.world.link.submits) > len(self.answered))
    @rule(n=st.integers(0, 50), verdict=st.sampled_from(["accept", "reject", "drop"]))
    def carrier_answers(self, n: int, verdict: str) -> None:
        w = self.world
        open_ = [i for i in range(len(w.link.submits)) if i not in self.answered]
        i = open_[n % len(open_)]
        self.answered.add(i)
        carrier, item = w.link.submits[i]
        w.publish(carrier, item)
        if verdict == "drop":
            return  # an offline carrier: no result, the submit was never processed
        if (carrier, item.id) in self.carrier_memory:
            w.accept(carrier, item)  # a repeat: acknowledged as a duplicate
        elif verdict == "accept":
            self.carrier_memory.add((carrier, item.id))
            self.accepted_by.setdefault(item.id, set()).add(carrier)
            w.accept(carrier, item)
        else:
            w.reject(carrier, item, Code.UNKNOWN_ERROR)

    @rule(seconds=st.sampled_from([0.5, 1.2, 31.0]))
    def time_passes(self, seconds: float) -> None:
        w = self.world
        w.clock.advance(seconds)
        w.wall.ms += int(seconds * 1000)
        w.pipeline.expire_submits()
        w.pipeline.retry_held()

    @rule()
    def crash(self) -> None:
        """SIGKILL: everything but the durable log is gone; the next owner restores it."""
        self.world = self._new_world()
        self.answered = set()

    @rule()
    def rebalance(self) -> None:
        """The partition moves away and back: in-flight work is forgotten, then restored."""
        w = self.world
        w.tracker.forget("sms.requests/0")
        w.pipeline.forget({PARTITION_NO})
        w.pipeline.restore(PARTITION_NO, list(self.log))

    @invariant()
    def one_carrier_per_message(self) -> None:
        for mid, carriers in self.accepted_by.items():
            assert len(carriers) <= 1, f"{mid} accepted as new by {sorted(carriers)}"


Workers.TestCase.settings = settings(max_examples=300, stateful_step_count=25, deadline=None)
TestOneCarrierPerMessage = Workers.TestCase
