"""Small, bounded versions of benchmarks/chaos.py (its parts: benchmarks/_chaos_*.py)
that run in the test suite against the shared test brokers (never killing them): the
hostile mix through a one-worker fleet, and a worker SIGKILL under load checked against
the carriers' journal. The benchmark's own computations (outcomes, recovery, scoring)
are checked first, on made-up records. Select them with ``-k chaos``."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks._chaos_figures import (
    Fault,
    Observed,
    figures,
    ground_truth,
    recovery_s,
    score_hostile,
    zero_seconds,
)
from benchmarks._chaos_hostile import KINDS, Ctx, Hostile, hostile_records, kcat_produce
from benchmarks._chaos_scenario import RESTARTING
from benchmarks._harness import Rec, TopicReader, flags_of, fleet_workers, until_idle
from carriers import generator
from carriers.network import reduce_network
from router.contracts import wire
from router.engine import kafka
from router.support.infra_settings import InfraSettings
from router.tools.infra.kafka_acls import Pipeline
from tests.integration.harness import (
    Proc,
    carriers_args,
    grant,
    kafka_admin,
    kafka_user,
    mobile_numbers,
    request_records,
    requests,
    revoke,
    worker_args,
)

REGIONS = {"GB", "DE", "FR", "NL"}
TOPICS = ("requests", "receipts", "dead-letter")

# -- the benchmark's computations, on made-up records -------------------------------------


@dataclass
class FakeTruth:
    accepted: dict[str, frozenset[str]] = field(default_factory=dict)
    reports_published: dict[tuple[str, str], str] = field(default_factory=dict)
    reports_acked: frozenset[tuple[str, str]] = frozenset()


def _rec(topic: str, offset: int, value: bytes | None, ts: int = 1_000, key: bytes | None = None,
         headers: Iterable[tuple[str, bytes]] = ()) -> Rec:  # fmt: skip
    return Rec(topic, 0, offset, key, value, tuple(headers), ts)


def _receipt(id: str, status: wire.Status, ts: int, code: int | None = None,
             carrier: str | None = "c1") -> bytes:  # fmt: skip
    return wire.ENCODER.encode(wire.Receipt(id, status, ts, error_code=code, carrier=carrier))


def _dead(offset: int, value: bytes | None, reason: str = "not_json") -> Rec:
    headers = [(wire.DLQ_REASON, f"{reason}: why".encode()), (wire.DLQ_TOPIC, b"rq"),
               (wire.DLQ_PARTITION, b"0"), (wire.DLQ_OFFSET, str(offset).encode())]  # fmt: skip
    return _rec("dl", 100 + offset, value, ts=2_500, headers=headers)


def _observed(records: Iterable[Rec]) -> Observed:
    obs = Observed("rq", "rc", "dl")
    for r in records:
        obs.on_record(r)
    return obs


def test_chaos_figures_count_outcomes_duplicates_and_the_journal() -> None:
    req = [_rec("rq", 0, b'{"id":"a","to":"+447911123456","body":"x"}'),
           _rec("rq", 1, b'{"id":"b","to":"+44","body":"x"}'),
           _rec("rq", 2, b"not json"),
           _rec("rq", 3, b'{"id":"d","to":"+447911123456","body":"x"}')]  # fmt: skip
    rc = [_rec("rc", 0, _receipt("a", "sent", 1_200)),
          _rec("rc", 1, _receipt("a", "sent", 1_300)),  # a duplicate
          _rec("rc", 2, _receipt("a", "delivered", 3_000)),
          _rec("rc", 3, _receipt("b", "failed", 1_100, 21211, None))]  # fmt: skip
    # The dead letter arrives before its request is read: it still counts.
    obs = _observed([_dead(2, b"not json"), *req, *rc])
    truth = FakeTruth(
        accepted={"a": frozenset({"c1"}), "d": frozenset({"c1", "c2"})},
        reports_published={("c1", "a"): "delivered", ("c2", "d"): "undelivered"},
    )
    f = figures(obs, truth, [], restarts=3, kills=2)
    assert (f.produced, f.with_outcome, f.lost, f.lost_examples) == (4, 3, 1, ["d"])
    assert (f.two_carriers, f.lost_reports, f.duplicate_receipts) == (1, 1, 1)
    assert f.lost_report_examples == ["c2/d:undelivered"]
    assert (f.restarts, f.deaths) == (3, 1)
    assert f.by_outcome == {"sent": 1, "failed 21211": 1, "dead letter": 1}
    assert obs.open == {"d"}
    no_journal = figures(obs, None, [], 0, 0)
    assert (no_journal.two_carriers, no_journal.lost_reports) == (None, None)


def test_chaos_zero_seconds_and_recovery_from_outcomes_per_second() -> None:
    # 10 outcomes/s for seconds 100-109, nothing in 110-114, 2/s at 115, 6/s from 116.
    buckets = Counter(dict.fromkeys(range(100, 110), 10))
    buckets.update({115: 2, **dict.fromkeys(range(116, 120), 6)})
    assert zero_seconds(buckets, 119) == 5
    assert zero_seconds(buckets, 125) == 11  # the load window ends later: more empty seconds
    assert recovery_s(buckets, (100.0, 110.0), 112.5) == 3.5  # 116 and 117 are >= 5
    assert recovery_s(buckets, (100.0, 110.0), 121.0) is None
    assert recovery_s(Counter(), (0.0, 1.0), 0.0) is None


def test_chaos_permanent_failures_after_recovery_are_counted() -> None:
    req = [_rec("rq", i, f'{{"id":"r{i}","to":"+447911123456","body":"x"}}'.encode(),
                ts=100_000 + i * 1_000) for i in range(30)]  # fmt: skip
    rc = [_rec("rc", i, _receipt(f"r{i}", "sent", 100_000 + i * 1_000 + 200)) for i in range(30)]
    rc += [_rec("rc", 40, _receipt("r25", "failed", 125_500, 30008)),
           _rec("rc", 41, _receipt("r5", "failed", 105_500, 39001))]  # fmt: skip
    obs = Observed("rq", "rc", "dl")
    for r in req + rc[-2:] + rc[:-2]:  # the failures come first for r25 and r5
        obs.on_record(r)
    f = figures(obs, None, [Fault("kafka-restart", 110.0, 112.0)], 0, 0)
    assert f.recovery_s is not None
    assert f.permanent_after_recovery == {"30001": 0, "30008": 1, "39001": 0}
    # r5 of the 10 before the fault, r25 of the 18 after recovery (r12-r29)
    assert f.permanent_per_1k == (100.0, 1000 / 18)


def test_chaos_hostile_scoring_flags_each_way_of_being_wrong() -> None:
    value = b'{"id":"x","to":"+447911123456","body":"hi","max_price":-1}'
    hs = [Hostile(b"k|max-price-negative|0", value, "max-price-negative", "x"),
          Hostile(b"k|not-json|0", b"nope", "not-json", None),
          Hostile(b"k|to-too-short|0", b"{}", "to-too-short", "y"),
          Hostile(b"k|control|0", b"{}", "control", "z")]  # fmt: skip
    obs = _observed([
        _rec("rq", 0, value, key=hs[0].key), _rec("rq", 1, b"nope", key=hs[1].key),
        _rec("rq", 2, b"{}", key=hs[2].key), _rec("rq", 3, b"{}", key=hs[3].key),
        _rec("rc", 0, _receipt("x", "sent", 1_000)),  # should have been a dead letter
        _dead(1, b"nope!", reason="bad_utf8"),  # a dead letter, but altered, other reason
        _rec("rc", 1, _receipt("y", "failed", 1_000, 21211)),
    ])  # fmt: skip
    s = score_hostile(obs, hs)
    assert (s["max-price-negative"].wrong, dict(s["max-price-negative"].got)) == (1, {"sent": 1})
    assert (s["not-json"].right, s["not-json"].reason_wrong, s["not-json"].altered) == (1, 1, 1)
    assert s["to-too-short"].right == 1
    assert dict(s["control"].got) == {"no outcome": 1}


def test_chaos_hostile_mix_has_every_kind_and_the_poison_pills() -> None:
    ctx = Ctx("t", ("+447911123456",), int(time.time() * 1000))
    records = hostile_records(ctx, 10_000)
    kinds = Counter(h.kind for h in records)
    assert len(records) >= 10_000
    assert set(kinds) == {k.name for k in KINDS} | {"issue-p1"}
    assert len(kinds) >= 50
    pill = next(h for h in records if h.kind == "issue-p1")
    assert pill.value == (b'{"id":"p1","to":"+447911123456","body":"x",'
                          b'"created_at":1700000000000,"validity_s":1e306}')  # fmt: skip
    huge = next(h for h in records if h.kind == "to-6mb-u0080")
    assert huge.value is not None
    assert huge.value.count("\u0080".encode()) * 2 >= 6_000_000
    assert len({h.key for h in records}) == len(records)


# -- against the test brokers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chaos-network")
    generator.write(generator.generate(1), root / "full")
    return reduce_network(root / "full", root / "small", REGIONS)


class Stack:
    """One test's carriers, fleet, topics and MQTT identities (carriers ``chaos-<tag>``,
    workers ``chaos-<tag>-w<i>``); stopped at the end. The topics are created as
    ``admin`` and granted to the fleet (Kafka user ``fleet``) and the producer, and the
    grants revoked in ``close``."""

    def __init__(self, infra: InfraSettings, network: Path, logs: Path) -> None:
        self.infra, self.network, self.logs = infra, network, logs
        self.tag = uuid.uuid4().hex[:8]
        self.topics = {t: f"chaos.{self.tag}.{t}" for t in (*TOPICS, "attempts")}
        self.journal = logs / "journal.bin"
        self.procs: list[Proc] = []
        self.admin = kafka_admin(infra)
        t = self.topics
        self.pipeline = Pipeline(t["requests"], t["receipts"], t["dead-letter"], t["attempts"],
                                 f"chaos-{self.tag}")  # fmt: skip
        self.granted = False

    async def start(self, workers: int) -> Proc:
        await kafka.ensure_topics(self.admin, [kafka.TopicSpec(self.topics[t], 6) for t in TOPICS])
        await grant(self.infra, self.pipeline)
        self.granted = True
        argv = ["carriers", "--network", str(self.network),
                *carriers_args(self.infra, f"chaos-{self.tag}"),
                "--ledger", str(self.logs / "ledger.json")]  # fmt: skip
        if "--journal" in flags_of("carriers"):
            argv += ["--journal", str(self.journal)]
        carriers = Proc("carriers", argv, self.logs / "carriers.log").start()
        self.procs.append(carriers)
        fleet_argv = [
            "fleet", "--workers", str(workers), "--bootstrap", self.infra.kafka_bootstrap,
            *worker_args(self.infra, f"chaos-{self.tag}", workers),
            "--network", str(self.network), "--requests-topic", self.topics["requests"],
            "--receipts-topic", self.topics["receipts"],
            "--dead-letter-topic", self.topics["dead-letter"], "--group", f"chaos-{self.tag}",
            "--dlr-group", f"chaos-{self.tag}", "--partitions", "6", "--metrics-port", "0",
            "--instance", f"chaos-{self.tag}", "--log-format", "json",
            "--submit-timeout-s", "5",
        ]  # fmt: skip
        if "--attempts-topic" in flags_of("fleet"):
            fleet_argv += ["--attempts-topic", self.topics["attempts"]]
        fleet = Proc("fleet", fleet_argv, self.logs / "fleet.log").start()
        self.procs.append(fleet)
        await carriers.wait_for("carriers ready")
        await fleet.wait_for("partitions assigned", count=workers)
        return fleet

    def observed(self) -> Observed:
        t = self.topics
        return Observed(t["requests"], t["receipts"], t["dead-letter"])

    def reader(self, obs: Observed) -> TopicReader:
        return TopicReader(self.admin, {self.topics[t]: 6 for t in TOPICS}, obs.on_record)

    async def close(self) -> None:
        try:
            for p in reversed(self.procs):
                await p.stop()
        finally:
            if self.granted:
                self.granted = False
                await revoke(self.infra, self.pipeline)


@pytest.fixture
async def stack(infra: InfraSettings, network: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(infra, network, tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.integration
async def test_chaos_hostile_mix_gets_its_expected_outcomes_and_no_worker_dies(
    stack: Stack, network: Path, tmp_path: Path
) -> None:
    fleet = await stack.start(workers=1)
    numbers = ("+447911123456", *mobile_numbers(network, 15, seed=5))
    ctx = Ctx(f"t{stack.tag}", numbers, int(time.time() * 1000))
    records = hostile_records(ctx, 150)
    assert len(records) >= 150
    # kcat, the foreign client, as the Kafka user `producer` (SASL PLAIN over TLS)
    producer = kafka_user(stack.infra, "producer")
    await kcat_produce(producer, stack.topics["requests"], records, tmp_path, set())
    obs = stack.observed()
    async with stack.reader(obs) as reader:
        follow = asyncio.create_task(reader.follow(stop := asyncio.Event()))
        try:
            settled = await until_idle(
                obs.progress, lambda: len(obs.requests) >= len(records) and not obs.open, 20, 50
            )
        finally:
            stop.set()
            await follow
        assert await reader.catch_up()
    scores = score_hostile(obs, records)
    wrong = {k: (s.expected, dict(s.got)) for k, s in scores.items() if s.wrong}
    assert not wrong, f"{len(wrong)} kinds not as expected: {wrong}"
    reasons = {k: s.reason_wrong for k, s in scores.items() if s.reason_wrong}
    assert not reasons, f"dead letters with another reason label: {reasons}"
    assert not [k for k, s in scores.items() if s.altered], "dead letters carry the bytes unchanged"
    assert settled
    assert fleet.running()
    assert RESTARTING not in fleet.text(), "a hostile record must never kill a worker"


@pytest.mark.integration
async def test_chaos_worker_sigkill_under_load_loses_nothing_nor_goes_to_two_carriers(
    stack: Stack, network: Path
) -> None:
    fleet = await stack.start(workers=2)
    reqs = requests(mobile_numbers(network, 3_000, seed=21), f"k-{stack.tag}")
    ids = {r.id for r in reqs}
    obs = stack.observed()
    producer = kafka.producer(stack.admin)
    await producer.start()
    async with stack.reader(obs) as reader:
        follow = asyncio.create_task(reader.follow(stop := asyncio.Event()))
        try:
            began = time.monotonic()
            killed = None
            for i, (key, value) in enumerate(request_records(reqs)):  # 200/s for 15 s
                if i % 20 == 0:
                    await asyncio.sleep(max(0.0, began + i / 200 - time.monotonic()))
                if i == 1_000:  # 5 s in, with requests in flight
                    killed = fleet_workers(fleet.pid).get(0)
                    assert killed is not None
                    os.kill(killed, signal.SIGKILL)
                await producer.send(stack.topics["requests"], value, key=key)
            await producer.flush()

            def done() -> bool:
                return len(obs.offsets) >= len(ids) and not obs.open

            await until_idle(obs.progress, done, 30, 90)
        finally:
            stop.set()
            await follow
            await producer.stop()
    lost = [i for i in ids if not obs.has_outcome(i)]
    assert not lost, f"{len(lost)} requests without an outcome, e.g. {lost[:3]}"
    assert fleet.text().count(RESTARTING) == 1, "the fleet restarted the killed worker"
    assert fleet_workers(fleet.pid).get(0) not in (None, killed)
    carriers = stack.procs[0]
    assert await carriers.stop() == 0
    truth = ground_truth([stack.journal])
    if truth is None or not stack.journal.exists():
        pytest.skip("nothing lost; the two-carrier check needs carriers --journal")
    twice = sorted(i for i, cs in truth.accepted.items() if len(cs) >= 2)
    assert not twice, f"{len(twice)} ids accepted by two carriers, e.g. {twice[:3]}"
    sent = {i for i in ids if obs.first_outcome[i].status == "sent"}
    assert sent <= truth.accepted.keys(), "every `sent` was accepted by a carrier"
