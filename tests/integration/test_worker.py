"""The engine end to end, against the real Kafka, the real Mosquitto and the carrier
endpoints: requests in, routing, submits over MQTT, receipts out, nothing lost."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.contracts import wire
from router.engine import kafka
from router.support.infra_settings import InfraSettings
from router.tools.infra.kafka_acls import Pipeline
from tests.integration.harness import (
    Proc,
    carriers_args,
    grant,
    kafka_admin,
    ledger_totals,
    mobile_numbers,
    outcomes,
    produce,
    read_topic,
    receipts,
    request_records,
    requests,
    revoke,
    wait_for_outcomes,
    worker_args,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration


class Stack:
    """One test's processes, topics and MQTT identities (the carriers' ``carriers-<tag>``,
    each worker's own name, a fleet's ``fleet-<tag>-w<i>``); everything is stopped at
    the end. The workers run as the Kafka user ``fleet`` on the test's own topics, granted
    in ``start`` and revoked in ``close``; the test itself reads and writes as ``admin``."""

    def __init__(self, infra: InfraSettings, network: Path, logs: Path) -> None:
        self.infra = infra
        self.network = network
        self.logs = logs
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.requests_topic = f"e2e.{tag}.requests"
        self.receipts_topic = f"e2e.{tag}.receipts"
        self.dead_letter_topic = f"e2e.{tag}.dead-letter"
        self.attempts_topic = f"e2e.{tag}.attempts"
        self.group = f"e2e-{tag}"
        self.ledger = logs / "ledger.json"
        self.procs: list[Proc] = []
        self.admin = kafka_admin(infra)
        self.pipeline = Pipeline(
            self.requests_topic, self.receipts_topic, self.dead_letter_topic,
            self.attempts_topic, self.group,
        )  # fmt: skip
        self.granted = False

    async def start(self) -> Stack:
        """Grant the test's topics and group to the fleet (and its producer and readers)."""
        await grant(self.infra, self.pipeline)
        self.granted = True
        return self

    async def carriers(self, scenario: Path | None = None) -> Proc:
        argv = ["carriers", "--network", str(self.network), "--ledger", str(self.ledger),
                *carriers_args(self.infra, f"carriers-{self.tag}")]  # fmt: skip
        if scenario is not None:
            argv += ["--scenario", str(scenario)]
        p = Proc("carriers", argv, self.logs / "carriers.log").start()
        self.procs.append(p)
        await p.wait_for("carriers ready")
        return p

    def worker_args(self, name: str, fleet: int | None = None, metrics_port: int = 0
                    ) -> list[str]:  # fmt: skip
        """A worker's flags; its MQTT identity is ``name`` (a fleet's: ``<name>-w<i>``);
        /metrics on ``metrics_port`` (0: none)."""
        return [
            "--bootstrap", self.infra.kafka_bootstrap, *worker_args(self.infra, name, fleet),
            "--network", str(self.network),
            "--requests-topic", self.requests_topic, "--receipts-topic", self.receipts_topic,
            "--dead-letter-topic", self.dead_letter_topic, "--group", self.group,
            "--attempts-topic", self.attempts_topic, "--dlr-group", self.group,
            "--partitions", "6", "--metrics-port", str(metrics_port),
            "--instance", name, "--log-format", "json", "--submit-timeout-s", "5",
            "--drain-timeout-s", "15",
        ]  # fmt: skip

    async def worker(self, name: str, metrics_port: int = 0) -> Proc:
        argv = ["worker", *self.worker_args(name, metrics_port=metrics_port)]
        p = Proc(name, argv, self.logs / f"{name}.log").start()
        self.procs.append(p)
        await p.wait_for("partitions assigned")
        return p

    async def fleet(self, workers: int) -> Proc:
        argv = ["fleet", "--workers", str(workers),
                *self.worker_args(f"fleet-{self.tag}", workers)]  # fmt: skip
        p = Proc("fleet", argv, self.logs / "fleet.log").start()
        self.procs.append(p)
        await p.wait_for("partitions assigned", count=workers)
        return p

    async def send(self, reqs: list[wire.SendRequest]) -> set[str]:
        await produce(self.admin, self.requests_topic, request_records(reqs))
        return {r.id for r in reqs}

    async def outcomes_for(self, ids: set[str], timeout: float = 120) -> list[wire.Receipt]:
        rs = await wait_for_outcomes(self.admin, self.receipts_topic, ids, timeout)
        missing = ids - outcomes(rs).keys()
        assert not missing, f"{len(missing)} requests have no outcome, e.g. {sorted(missing)[:3]}"
        return rs

    async def stop(self) -> None:
        """Stop the processes (newest first); the grants stay."""
        for p in reversed(self.procs):
            await p.stop()
        self.procs.clear()

    async def close(self) -> None:
        """Stop the processes, then revoke the grants."""
        try:
            await self.stop()
        finally:
            if self.granted:
                self.granted = False
                await revoke(self.infra, self.pipeline)


@pytest.fixture
async def stack(infra: InfraSettings, network: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(infra, network, tmp_path)
    try:
        yield await s.start()
    finally:
        await s.close()


def reports_of(rs: list[wire.Receipt], ids: set[str]) -> list[wire.Receipt]:
    """Delivery receipts of this test's requests (other carrier processes on the broker,
    from other tests or a demo, report to every router group)."""
    return [r for r in rs if r.status in ("delivered", "undelivered") and r.id in ids]


async def test_fleet_routes_20000_requests_and_every_report_becomes_a_receipt(
    stack: Stack, network: Path
) -> None:
    await stack.carriers()
    fleet = await stack.fleet(2)
    good = requests(mobile_numbers(network, 19_000, seed=7), f"ok-{stack.tag}")
    bad_to = requests(["+44123", "447700900123", "+999123456789", "+4477009001234567"] * 250,
                      f"bad-{stack.tag}")  # fmt: skip
    ids = await stack.send(good + bad_to)

    rs = await stack.outcomes_for(ids)
    by_id = outcomes(rs)
    for r in bad_to:
        assert {x.status for x in by_id[r.id]} == {"failed"}
        assert {x.error_code for x in by_id[r.id]} == {21211}
    statuses = Counter(x.status for r in good for x in by_id[r.id][:1])
    assert statuses["sent"] > 0.95 * len(good), statuses
    assert fleet.running()

    # Stop the carriers: they write their ledger. Every report they published must
    # become exactly one receipt (reports are never duplicated, some are lost on purpose).
    carriers = stack.procs[0]
    assert await carriers.stop() == 0
    ledger = ledger_totals(stack.ledger)
    published = sum(c["reports_sent"] for c in ledger.values())
    deadline = time.monotonic() + 60
    while True:
        rs = receipts(await read_topic(stack.admin, stack.receipts_topic, idle=1))
        if len(reports_of(rs, ids)) >= published or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    reports = reports_of(rs, ids)
    assert len(reports) == published
    per_carrier = Counter(r.carrier for r in reports)
    for cid, counts in ledger.items():
        assert per_carrier[cid] == counts["reports_sent"], cid
    # The ledger agrees with the receipts: every `sent` was accepted by its carrier;
    # a carrier accepted more only where an attempt timed out and failed over.
    sent_by = Counter(x.carrier for v in outcomes(rs).values() for x in v if x.status == "sent")
    timed_out = Counter(f.carrier for v in outcomes(rs).values() for x in v
                        for f in x.failovers if f.code == 30008)  # fmt: skip
    for cid, counts in ledger.items():
        assert sent_by[cid] <= counts["accepted"] <= sent_by[cid] + timed_out[cid], cid
    # Each receipt's status is the handset's truth: per carrier, no more delivered (or
    # undelivered) receipts than messages it delivered (or not). With the counts per
    # carrier above, a carrier that lost no report has them exactly.
    statuses_by = Counter((r.carrier, r.status) for r in reports)
    for cid, counts in ledger.items():
        for status in ("delivered", "undelivered"):
            assert statuses_by[cid, status] <= counts[status], (cid, status)
    assert await fleet.stop() == 0


GARBAGE: list[bytes | None] = [
    b"not json at all",
    b'{"id": "x1", "to": "+447700900123"}',  # no body
    b'{"to": "+447700900123", "body": "hi"}',  # no id
    b'{"id": 42, "to": "+447700900123", "body": "hi"}',  # wrong type
    b'{"id": "x2", "to": "+447700900123", "body": "hi", "max_price": "cheap"}',
    b'{"id": "x3", "to": "+447700900123", "body": "\xff\xfe bad utf-8"}',
    b"\x00\x01\x02\x03",
    b"[1, 2, 3]",
    b"",
    None,
    b"{" + b"x" * (1024 * 1024) + b"}",  # 1 MB of garbage
    b'{"id": "' + b"y" * (1024 * 1024) + b'", "to": "+4477", "body": "x"}',  # 1 MB id
]


async def test_garbage_goes_to_the_dead_letter_topic_unchanged(stack: Stack, network: Path) -> None:
    await stack.carriers()
    worker = await stack.worker(f"w-{stack.tag}")
    good = requests(mobile_numbers(network, 500, seed=3), f"ok-{stack.tag}")
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate([(r.to.encode(), wire.ENCODER.encode(r)) for r in good]):
        records.append((key, value))
        if i % 40 == 0:
            g = GARBAGE[(i // 40) % len(GARBAGE)]
            records.append((f"garbage-{i}".encode(), g))
    garbage = {k: v for k, v in records if k is not None and k.startswith(b"garbage-")}
    await produce(stack.admin, stack.requests_topic, records)

    await stack.outcomes_for({r.id for r in good})
    dead = await read_topic(stack.admin, stack.dead_letter_topic, until=len(garbage))
    assert len(dead) == len(garbage)
    for d in dead:
        assert d.key is not None
        assert d.value == garbage[d.key], "dead letters carry the bytes unchanged"
        assert d.headers[wire.DLQ_REASON]
        assert d.headers[wire.DLQ_TOPIC] == stack.requests_topic.encode()
    # The headers point at the original: the record at that partition and offset.
    places = [(int(d.headers[wire.DLQ_PARTITION]), int(d.headers[wire.DLQ_OFFSET])) for d in dead]
    assert len(set(places)) == len(dead)
    async with kafka.Reader(stack.admin, stack.requests_topic) as reader:
        originals = {
            (r.partition, r.offset): (r.key, r.value)
            async for batch in reader.records()
            for r in batch
        }
    for d, place in zip(dead, places, strict=True):
        assert originals.get(place) == (d.key, d.value), place
    assert worker.running(), "a bad message must never kill a worker"
    assert "worker failed" not in worker.text()


async def test_sigkill_of_a_worker_loses_nothing(stack: Stack, network: Path) -> None:
    await stack.carriers()
    victim = await stack.worker(f"victim-{stack.tag}")
    survivor = await stack.worker(f"survivor-{stack.tag}")
    reqs = requests(mobile_numbers(network, 8_000, seed=11), f"k-{stack.tag}")
    send = asyncio.create_task(stack.send(reqs))
    # Kill it mid-run: once receipts are flowing, with requests still being produced.
    await read_topic(stack.admin, stack.receipts_topic, until=1000, timeout=60)
    victim.signal(signal.SIGKILL)
    ids = await send
    rs = await stack.outcomes_for(ids, timeout=180)
    assert survivor.running()
    # One carrier per message: no id has reports from two carriers (a report may come
    # twice from its one carrier: reports are re-sent until acknowledged).
    carriers = stack.procs[0]
    assert await carriers.stop() == 0
    rs = receipts(await read_topic(stack.admin, stack.receipts_topic, idle=2))
    reporters: dict[str, set[str | None]] = {}
    for r in reports_of(rs, ids):
        reporters.setdefault(r.id, set()).add(r.carrier)
    assert reporters, "delivery reports should have arrived"
    assert max(map(len, reporters.values())) == 1
    senders: dict[str, set[str | None]] = {}
    for r in rs:
        if r.status == "sent" and r.id in ids:
            senders.setdefault(r.id, set()).add(r.carrier)
    assert max(map(len, senders.values())) == 1
    # The carriers' ground truth: every message they accepted as new is one sent message.
    ledger = ledger_totals(stack.ledger)
    assert sum(c["accepted"] for c in ledger.values()) == len(senders)


async def test_repeated_ids_across_a_worker_restart_are_answered_not_sent_again(
    stack: Stack, network: Path
) -> None:
    """A producer repeats 300 requests after the worker that handled them stopped: the new
    worker restores their outcomes from the attempts log and answers each with the same
    carrier, without a submit (the carriers' ledger counts no repeat and no new accept)."""
    await stack.carriers()
    first = await stack.worker(f"first-{stack.tag}")
    reqs = requests(mobile_numbers(network, 300, seed=17), f"rep-{stack.tag}")
    ids = await stack.send(reqs)
    before = {r.id: r for r in await stack.outcomes_for(ids) if r.status in ("sent", "failed")}
    assert await first.stop() == 0
    await stack.worker(f"second-{stack.tag}")
    await stack.send(reqs)  # the same records again
    # Until every id has two outcomes (counting records would also count the reports).
    rs = await wait_for_outcomes(stack.admin, stack.receipts_topic, ids, timeout=60, each=2)
    answers: dict[str, list[wire.Receipt]] = {}
    for r in rs:
        if r.status in ("sent", "failed") and r.id in ids:
            answers.setdefault(r.id, []).append(r)
    assert all(len(a) == 2 for a in answers.values()), "every repeat gets an outcome"
    for mid, (original, again) in answers.items():
        assert (again.status, again.carrier, again.error_code) == (
            original.status, original.carrier, original.error_code
        ), mid  # fmt: skip
    assert set(answers) == set(before)
    carriers = stack.procs[0]
    assert await carriers.stop() == 0
    ledger = ledger_totals(stack.ledger)
    sent = sum(1 for r in before.values() if r.status == "sent")
    assert sum(c["accepted"] for c in ledger.values()) == sent
    assert sum(c["repeats"] for c in ledger.values()) == 0


async def test_offline_carrier_traffic_moves_to_fallbacks(
    stack: Stack, network: Path, tmp_path: Path
) -> None:
    numbers = mobile_numbers(network, 8_000, seed=13)
    # Find the busiest carrier of this traffic in a first, quiet run.
    await stack.carriers()
    await stack.worker(f"probe-{stack.tag}")
    rs = await stack.outcomes_for(await stack.send(requests(numbers[:500], f"warm-{stack.tag}")))
    busiest, _ = Counter(
        x.carrier for v in outcomes(rs).values() for x in v if x.status == "sent"
    ).most_common(1)[0]
    await stack.stop()

    # It goes offline three seconds into a steady stream of requests.
    scenario = tmp_path / "outage.toml"
    scenario.write_text(
        f'name = "outage"\n[[events]]\nkind = "offline"\nat = 3\ncarriers = "{busiest}"\n'
    )
    carriers = await stack.carriers(scenario)
    await stack.worker(f"w-{stack.tag}")
    stream = requests(numbers[500:], f"s-{stack.tag}")
    ids: set[str] = set()
    for i in range(0, len(stream), 500):  # ~7 s of traffic
        ids |= await stack.send(stream[i : i + 500])
        await asyncio.sleep(0.5)
    rs = await stack.outcomes_for(ids)
    line = next(x for x in carriers.text().splitlines() if '"status": "offline"' in x)
    offline_ms = int(datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp() * 1000)
    sent = [x for v in outcomes(rs).values() for x in v if x.status == "sent"]
    assert any(x.carrier == busiest and x.ts < offline_ms for x in sent), "busy before"
    assert not [x for x in sent if x.carrier == busiest and x.ts > offline_ms + 1000]
    # What was in flight at the outage timed out and failed over: the receipts say so.
    failed_over = [x for x in sent if any(f.carrier == busiest for f in x.failovers)]
    assert failed_over, "in-flight messages of the offline carrier should fail over"
    assert {f.code for x in failed_over for f in x.failovers if f.carrier == busiest} == {30008}
    assert all(x.carrier != busiest and x.attempt >= 2 for x in failed_over)
    # Its destinations are still served, by the fallbacks.
    assert len(sent) > 0.9 * len(stream)


def in_flight(port: int) -> float:
    """The worker's ``supernet_in_flight`` gauge, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        families = text_string_to_metric_families(r.read().decode())
    return sum(s.value for f in families if f.name == "supernet_in_flight" for s in f.samples)


def probe(port: int, path: str) -> tuple[int, list[str]]:
    """A worker's /healthz or /readyz: its status and the reasons it gives."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())["why"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["why"]


def lag_samples(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        families = text_string_to_metric_families(r.read().decode())
    return {s.labels["partition"]: s.value for f in families if f.name == "supernet_consumer_lag"
            for s in f.samples}  # fmt: skip


async def test_sigterm_during_load_drains_and_exits_zero(
    stack: Stack, network: Path, tmp_path: Path
) -> None:
    """SIGTERM while requests are in flight (carriers answer ten times slower than usual
    and requests keep coming): the worker stops intake, answers what it holds, commits and
    exits 0; the next worker answers the rest, and no request is answered twice."""
    # Ten times slower: a submit takes ~300 ms (up to 3 s), so hundreds are in flight while
    # the stream runs.
    slow = tmp_path / "slow.toml"
    slow.write_text(
        'name = "slow"\n[[events]]\nkind = "latency_spike"\nat = 0\ncarriers = "*"\nfactor = 10.0\n'
    )
    await stack.carriers(slow)
    port = free_port()
    first = await stack.worker(f"first-{stack.tag}", metrics_port=port)
    reqs = requests(mobile_numbers(network, 6_000, seed=17), f"t-{stack.tag}")
    ids = {r.id for r in reqs}

    async def stream() -> None:  # ~8 s of traffic
        for i in range(0, len(reqs), 400):
            await stack.send(reqs[i : i + 400])
            await asyncio.sleep(0.5)

    send = asyncio.create_task(stream())
    # The signal comes when the worker's own gauge says it holds at least 100 submits in
    # flight, not at a moment chosen by the clock or by receipts read back (both let it land
    # in a gap between batches, with nothing in flight, on a slow machine).
    async with asyncio.timeout(60):
        while await asyncio.to_thread(in_flight, port) < 100:
            assert not send.done(), "the stream ended and the worker never held 100 in flight"
            await asyncio.sleep(0.05)
    # Serving: alive, ready (its partitions, both brokers), its lag per partition shown.
    assert await asyncio.to_thread(probe, port, "/healthz") == (200, [])
    assert await asyncio.to_thread(probe, port, "/readyz") == (200, [])
    assert len(await asyncio.to_thread(lag_samples, port)) == 6
    term_ms = time.time() * 1000
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    # Draining: still alive, no longer ready (asked before the drain can end: hundreds are
    # in flight at carriers ten times slower than usual).
    async with asyncio.timeout(5):
        while (ready := await asyncio.to_thread(probe, port, "/readyz"))[0] == 200:  # noqa: ASYNC110 - polling another process
            await asyncio.sleep(0.05)
    assert ready == (503, ["draining"])
    assert (await asyncio.to_thread(probe, port, "/healthz"))[0] == 200
    assert await first.wait(timeout=30) == 0
    exit_ms = time.time() * 1000
    assert time.monotonic() - started < 15 + 10, "exit within the drain deadline"
    assert "drained; offsets committed" in first.text()
    await send
    await stack.worker(f"second-{stack.tag}")  # picks up from the committed offsets
    await stack.outcomes_for(ids)
    rs = receipts(await read_topic(stack.admin, stack.receipts_topic, idle=2))
    answers = {mid: v for mid, v in outcomes(rs).items() if mid in ids}
    # Requests were in flight at the signal: the first worker answered some after it (the
    # second one was not running yet), and had not answered all before it.
    during_drain = [a for v in answers.values() for a in v if term_ms <= a.ts <= exit_ms]
    assert during_drain, "nothing was in flight at SIGTERM: the drain was not tested"
    before = {mid for mid, v in answers.items() if min(a.ts for a in v) < term_ms}
    assert len(before) < len(ids)
    # The drain committed what it answered: the second worker read none of it again.
    twice = {mid: len(v) for mid, v in answers.items() if len(v) > 1}
    assert not twice, f"{len(twice)} requests answered more than once, e.g. {list(twice)[:3]}"
