"""Every request gets one durable outcome, whatever the order of events: a hypothesis
state machine over the pipeline with fakes all round.

Rules: requests taken (routable, refused, expired, undecodable; few ids, so repeats in
flight are common), submits published, accepted, rejected or answered twice, Kafka
acknowledging receipts and attempt records (late when it is slow), time passing (submit
timeouts, holds, validity), carriers going offline and online, the carrier link
reconnecting. Invariants after every step: an offset is finished once, only by the
acknowledgement of its request's outcome; the commit never passes an open offset; one
carrier per attempt, a second carrier only after a definite no; no submit before its
attempt is durable; at most one outcome per request; a ``sent`` only from the carrier
that accepted. The teardown drains (every submit published and left to time out, every
record acknowledged) and checks that each request got exactly one durable outcome with
the code its kind calls for.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from router.contracts import interconnect, wire
from router.contracts.codes import Code
from router.engine.attempts import AttemptRecord
from router.engine.pipeline import ASKS, HOLD_CODES
from tests.router.engine.fakes import (
    ES_NONE,
    FR_SINGLE,
    GB_MULTI,
    PARTITION,
    US_MULTI,
    Done,
    World,
    request,
)
from tests.router.engine.pipeline_world import saturate

KINDS = ["gb", "us", "fr", "es", "invalid", "garbage", "expired", "short-lived"]
STATUS_CARRIERS = ["us-att", "agg-premium", "agg-budget"]
ADVANCE_S = [0.001, 0.5, 1.2, 31.0]  # the submit timeout is 1 s, the hold limit 30 s
REFUSED = {"es": Code.NO_ROUTE, "invalid": Code.INVALID_DESTINATION, "expired": Code.EXPIRED}
MAX_TAKES = 10
pick = st.integers(0, 63)  # which of the eligible submits or records, modulo their number
kinds = st.sampled_from(["gb", "us", *KINDS])  # routable ones twice as often
rids = st.sampled_from(["a", "b"])  # few ids, so that repeats in flight are common


def make_request(w: World, kind: str, rid: str) -> bytes:
    """A request of ``kind``; one id is one message (its repeats are the same request)."""
    id = f"{kind}-{rid}"
    to = {"gb": GB_MULTI, "us": US_MULTI, "fr": FR_SINGLE, "es": ES_NONE, "invalid": "+12"}
    if kind == "garbage":
        return b'{"id": "' + id.encode() + b'", "to": 1}'
    if kind == "expired":
        return request(id=id, created_at=w.wall.ms - 60_000, validity_s=1)
    if kind == "short-lived":
        return request(id=id, to=US_MULTI, created_at=w.wall.ms, validity_s=2)
    return request(id=id, to=to[kind])


class PipelineMachine(RuleBasedStateMachine):
    w: World
    max_attempts: int

    def __init__(self) -> None:
        super().__init__()
        self.taken: dict[int, tuple[str, str]] = {}  # offset -> (kind, rid)
        self.published: set[int] = set()  # indexes into link.submits the broker took
        self.answered: set[int] = set()  # indexes into link.submits answered once
        self.accepted: set[tuple[str, int, str]] = set()  # (id, attempt, carrier)
        self.rejected: set[tuple[str, int, str]] = set()
        self.durable: set[tuple[str, int, str]] = set()  # attempt records Kafka took

    @initialize(
        max_attempts=st.integers(1, 3),
        full=st.booleans(),
        first=st.lists(st.tuples(kinds, rids), min_size=1, max_size=4),
    )
    def world(self, max_attempts: int, full: bool, first: list[tuple[str, str]]) -> None:
        """A pipeline (agg-premium's bucket empty when ``full``) and its first requests."""
        self.max_attempts = max_attempts
        self.w = w = World(submit_timeout_s=1.0, max_attempts=max_attempts)
        if full:
            saturate(w, "agg-premium")  # French requests are held until time passes
        write = w.sink.attempt

        def attempt(record: AttemptRecord, partition: int, on_durable: Done | None) -> None:
            def durable() -> None:
                self.durable.add((record.id, record.attempt, record.carrier))
                assert on_durable is not None
                on_durable()

            write(record, partition, None if on_durable is None else durable)

        w.sink.attempt = attempt  # type: ignore[method-assign]
        for kind, rid in first:
            self.take(kind, rid)

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: len(self.taken) < MAX_TAKES)
    @rule(kind=kinds, rid=rids)
    def take(self, kind: str, rid: str) -> None:
        self.taken[self.w.take(make_request(self.w, kind, rid))] = (kind, rid)

    def _submit(self, n: int, among: set[int]) -> tuple[int, str, interconnect.SubmitItem]:
        eligible = [i for i in range(len(self.w.link.submits)) if i not in among]
        i = eligible[n % len(eligible)]
        return (i, *self.w.link.submits[i])

    @precondition(lambda self: len(self.w.link.submits) > len(self.published))
    @rule(n=pick)
    def publish(self, n: int) -> None:
        """The broker took a submit: its timeout starts."""
        i, carrier, item = self._submit(n, self.published)
        self.published.add(i)
        self.w.publish(carrier, item)

    @precondition(lambda self: len(self.w.link.submits) > len(self.answered))
    @rule(n=pick)
    def accept(self, n: int) -> None:
        """The carrier accepts (perhaps late, after the attempt timed out)."""
        i, carrier, item = self._submit(n, self.answered)
        self.answered.add(i)
        self.accepted.add((item.id, item.attempt, carrier))
        self.w.accept(carrier, item)

    @precondition(lambda self: len(self.w.link.submits) > len(self.answered))
    @rule(n=pick, code=st.sampled_from([None, Code.QUEUE_OVERFLOW, Code.UNKNOWN_ERROR]))
    def reject(self, n: int, code: int | None) -> None:
        i, carrier, item = self._submit(n, self.answered)
        self.answered.add(i)
        self.rejected.add((item.id, item.attempt, carrier))
        self.w.reject(carrier, item, code)

    @precondition(lambda self: bool(self.answered))
    @rule(n=pick)
    def answer_again(self, n: int) -> None:
        """A carrier repeats its answer (a duplicate acknowledged, or a resent batch)."""
        answered = sorted(self.answered)
        carrier, item = self.w.link.submits[answered[n % len(answered)]]
        if (item.id, item.attempt, carrier) in self.accepted:
            self.w.accept(carrier, item)
        else:
            self.w.reject(carrier, item, Code.UNKNOWN_ERROR)

    @precondition(lambda self: bool(self.w.sink.unacked()))
    @rule(n=pick)
    def ack(self, n: int) -> None:
        """Kafka makes one receipt or dead letter durable."""
        unacked = self.w.sink.unacked()
        self.w.sink.ack(unacked[n % len(unacked)])

    @rule()
    def kafka_slow_on_attempts(self) -> None:
        """Attempt records written from now on wait for ``attempts_durable``."""
        self.w.sink.hold_attempts = True

    @rule()
    def attempts_durable(self) -> None:
        self.w.sink.hold_attempts = False
        self.w.sink.ack_attempts()

    @rule(seconds=st.sampled_from(ADVANCE_S))
    def tick(self, seconds: float) -> None:
        w = self.w
        w.clock.advance(seconds)
        w.wall.ms += int(seconds * 1000)
        w.pipeline.expire_submits()
        w.pipeline.retry_held()

    @rule(carrier=st.sampled_from(STATUS_CARRIERS), online=st.booleans())
    def status(self, carrier: str, online: bool) -> None:
        self.w.pipeline.on_status(carrier, online)

    @rule()
    def link_reconnects(self) -> None:
        self.w.pipeline.on_changed(())

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def offsets_finish_once_by_their_outcome(self) -> None:
        by_record: dict[int, str] = {}
        for (partition, offset), records in self.w.tracker.done_by.items():
            assert partition == PARTITION
            assert len(records) == 1, f"offset {offset} marked done {len(records)} times"
            record = records[0]
            assert record is not None, "an offset was marked done outside a Kafka ack"
            assert record.is_outcome
            kind, rid = self.taken[offset]
            # One ack finishes several offsets only for repeats of one id (a repeat that
            # came while the original was in flight is answered with it).
            assert by_record.setdefault(id(record), f"{kind}-{rid}") == f"{kind}-{rid}", (
                "one ack finished two different requests"
            )
            if record.receipt is None:
                assert kind == "garbage"
            else:
                assert record.receipt.id == f"{kind}-{rid}"

    @invariant()
    def commit_never_passes_an_open_offset(self) -> None:
        done = self.w.tracker.done_by
        open_offsets = [o for o in self.taken if (PARTITION, o) not in done]
        committable = self.w.committable()
        if open_offsets:
            assert committable is not None
            assert committable <= min(open_offsets)
        elif self.taken:
            assert committable == max(self.taken) + 1
        assert self.w.tracker.in_flight == len(open_offsets)

    @invariant()
    def one_carrier_per_attempt_and_a_second_only_after_a_definite_no(self) -> None:
        asks: dict[tuple[str, int], list[int]] = defaultdict(list)  # (id, attempt) -> indexes
        carriers: dict[str, dict[int, str]] = defaultdict(dict)  # id -> attempt -> carrier
        for i, (carrier, item) in enumerate(self.w.link.submits):
            assert carrier == item.carrier
            assert 1 <= item.attempt <= self.max_attempts
            assert carriers[item.id].setdefault(item.attempt, carrier) == carrier, (
                f"{item.id} attempt {item.attempt} went to two carriers"
            )
            asks[item.id, item.attempt].append(i)
        for mid, by_attempt in carriers.items():
            assert len(set(by_attempt.values())) == len(by_attempt), (
                f"{mid} went to one carrier twice: {by_attempt}"
            )
            for attempt in by_attempt:
                if attempt == 1:
                    continue
                before = asks.get((mid, attempt - 1))
                assert before, f"{mid}: attempt {attempt} without attempt {attempt - 1}"
                carrier = by_attempt[attempt - 1]
                silent = len(before) >= ASKS and before[-1] in self.published
                assert (mid, attempt - 1, carrier) in self.rejected or silent, (
                    f"{mid} moved on from {carrier} without a rejection or a silence"
                )

    @invariant()
    def no_submit_before_its_attempt_is_durable(self) -> None:
        for carrier, item in self.w.link.submits:
            assert (item.id, item.attempt, carrier) in self.durable

    @invariant()
    def at_most_one_outcome_per_request_and_sent_by_who_accepted(self) -> None:
        takes = Counter(f"{kind}-{rid}" for kind, rid in self.taken.values())
        outcomes: Counter[str] = Counter()
        sent_by: dict[str, set[str]] = defaultdict(set)
        for record in self.w.sink.outcomes:
            assert record.on_durable is not None
            r = record.receipt
            outcomes[r.id if r is not None else "garbage"] += 1
            if r is not None and r.status == "sent":
                assert r.carrier is not None
                assert (r.id, r.attempt, r.carrier) in self.accepted
                assert len(r.failovers) <= r.attempt - 1  # a repeat's answer lists none
                sent_by[r.id].add(r.carrier)
        for mid, senders in sent_by.items():
            assert len(senders) == 1, f"{mid} sent by {senders}"
        garbage = sum(1 for kind, _ in self.taken.values() if kind == "garbage")
        assert outcomes.pop("garbage", 0) <= garbage
        for mid, n in outcomes.items():
            assert n <= takes[mid], f"{mid}: {n} outcomes for {takes[mid]} requests"

    def check_all(self) -> None:
        self.offsets_finish_once_by_their_outcome()
        self.commit_never_passes_an_open_offset()
        self.one_carrier_per_attempt_and_a_second_only_after_a_definite_no()
        self.no_submit_before_its_attempt_is_durable()
        self.at_most_one_outcome_per_request_and_sent_by_who_accepted()

    # -- the end -------------------------------------------------------------------------

    def teardown(self) -> None:
        """Drain: carriers online, Kafka quick; every submit is published and left to time
        out, every record acknowledged. Then each request has exactly one durable outcome:
        the one its kind calls for."""
        if not hasattr(self, "w"):
            return  # the run ended before the world was built
        w = self.w
        for carrier in STATUS_CARRIERS:
            w.pipeline.on_status(carrier, True)
        self.attempts_durable()
        for _ in range(100):
            for i, (carrier, item) in enumerate(w.link.submits):
                if i not in self.published:
                    self.published.add(i)
                    w.publish(carrier, item)
            self.tick(2.0)
            w.sink.ack_attempts()
            w.sink.ack_all()
            self.check_all()
            if w.tracker.in_flight == 0:
                break
        assert w.tracker.in_flight == 0, "the drain left requests without an outcome"
        assert w.sink.unacked() == []
        self.check_outcomes()

    def check_outcomes(self) -> None:
        """Each offset finished by one acknowledged outcome, the one its kind calls for; a
        repeat answered like the original; failovers that match the submits."""
        w = self.w
        assert len(w.tracker.done_by) == len(self.taken)
        first: dict[str, tuple[str, wire.Receipt]] = {}  # id -> (kind, its first outcome)
        for (_, offset), (record,) in sorted(w.tracker.done_by.items()):
            assert record is not None
            assert record.acked
            kind, rid = self.taken[offset]
            r = record.receipt
            if kind == "garbage":
                assert r is None
                continue
            assert r is not None
            assert r.id == f"{kind}-{rid}"
            _, original = first.setdefault(r.id, (kind, r))
            assert (r.status, r.carrier, r.attempt, r.error_code) == (
                original.status, original.carrier, original.attempt, original.error_code
            ), "a repeat answered unlike the original"  # fmt: skip
            if kind in REFUSED:
                assert (r.status, r.error_code, r.attempt) == ("failed", REFUSED[kind], 0)
            else:
                assert r.status in ("sent", "failed")
                assert r.attempt <= self.max_attempts
        carriers = {(item.id, item.attempt): c for c, item in w.link.submits}
        for kind, r in first.values():
            failed = [(f.carrier, f.attempt) for f in r.failovers]
            assert failed == [(carriers[r.id, n], n) for n in range(1, len(failed) + 1)]
            if r.status == "sent":
                assert len(failed) == r.attempt - 1
            elif r.error_code != Code.EXPIRED and kind not in REFUSED:
                if failed:  # out of attempts or carriers: the last rejection's code
                    assert (r.attempt, r.error_code) == (len(failed), r.failovers[-1].code)
                else:  # held from the start until the hold limit
                    assert (r.attempt, r.error_code) in {(0, c) for c in HOLD_CODES}


PipelineMachine.TestCase.settings = settings(
    max_examples=600, stateful_step_count=50, deadline=None
)
test_every_request_gets_one_durable_outcome_whatever_the_order = PipelineMachine.TestCase
