"""`supernet demo`, short and small, against the real brokers: every figure of its summary
is recomputed here from the requests and receipts that are really in Kafka (read as
``admin``; the demo grants its own topics to its fleet, producer and receipt reader, and
the test revokes them at the end)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tomllib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from carriers import generator
from carriers.network import reduce_network
from router.contracts import wire
from router.engine import kafka
from router.support.credentials import KafkaAccess
from router.support.infra_settings import InfraSettings
from router.tools.economics import compare
from router.tools.infra.kafka_acls import Pipeline
from tests.integration.harness import kafka_admin, revoke

pytestmark = pytest.mark.integration

REGIONS = {"GB", "DE", "FR", "NL"}
RATE, DURATION, ECONOMICS_COUNT = 300, 8, 400


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-network")
    generator.write(generator.generate(1), root / "full")
    return reduce_network(root / "full", root / "small", REGIONS)


async def read_range(access: KafkaAccess, topic: str, until: dict[str, list[int]]) -> list[bytes]:
    """Every value of ``topic`` below the end offsets the demo says it read up to."""
    ends = {int(p): r[1] for p, r in until.items()}
    return (await kafka.read_between(access, topic, None, ends)).values


def nearest_rank(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


@pytest.fixture
async def demo_run(
    infra: InfraSettings, network: Path, tmp_path: Path
) -> AsyncIterator[tuple[dict[str, Any], str, Path]]:
    tag = uuid.uuid4().hex[:8]
    out = tmp_path / "demo"
    argv = [
        sys.executable, "-m", "router", "demo", "--no-infra", "--network", str(network),
        "--rate", str(RATE), "--duration", str(DURATION), "--workers", "1",
        "--out", str(out), "--metrics-port", "0", "--wait-s", "12",
        "--economics-count", str(ECONOMICS_COUNT),
        "--requests-topic", f"demo.{tag}.requests", "--receipts-topic", f"demo.{tag}.receipts",
        "--dead-letter-topic", f"demo.{tag}.dead-letter", "--group", f"demo-{tag}",
        "--dlr-group", f"demo-{tag}", "--id-prefix", f"t{tag}-",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SUPERNET_HOST": infra.host,
        "SUPERNET_KAFKA_PORT": str(infra.kafka_port),
        "SUPERNET_KAFKA_CONTROLLER_PORT": str(infra.kafka_controller_port),
        "SUPERNET_MQTT_PORT": str(infra.mqtt_port),
        "SUPERNET_PROMETHEUS_PORT": str(infra.prometheus_port),
        "SUPERNET_STATE_DIR": str(infra.state_dir),
    }
    # What the demo grants itself (router.tools.demo.steps.identities), revoked at the end.
    pipeline = Pipeline(f"demo.{tag}.requests", f"demo.{tag}.receipts",
                        f"demo.{tag}.dead-letter", group=f"demo-{tag}")  # fmt: skip
    try:
        done = await asyncio.to_thread(
            subprocess.run, argv, env=env, capture_output=True, text=True, timeout=240,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        document: dict[str, Any] = json.loads((out / "summary.json").read_text())
        yield document, done.stdout, out
    finally:
        await revoke(infra, pipeline)


async def test_every_figure_of_the_summary_comes_from_the_receipts(
    demo_run: tuple[dict[str, Any], str, Path], infra: InfraSettings, network: Path
) -> None:
    document, stdout, out = demo_run
    run, s = document["run"], document["summary"]
    config = run["config"]
    prefix = run["id_prefix"]

    # What is in Kafka, read here independently, up to where the demo read.
    requests = [
        wire.decode_request(v)
        for v in await read_range(
            kafka_admin(infra), config["requests_topic"], run["requests_offsets"]
        )
    ]
    receipts = [
        wire.RECEIPT_DECODER.decode(v)
        for v in await read_range(
            kafka_admin(infra), config["receipts_topic"], run["receipts_offsets"]
        )
    ]
    created = {r.id: r.created_at or 0 for r in requests if r.id.startswith(prefix)}
    assert len(created) == RATE * DURATION == s["requests"]

    first: dict[tuple[str, str], wire.Receipt] = {}
    for r in receipts:
        if r.id in created and ((r.id, r.status) not in first or r.ts < first[r.id, r.status].ts):
            first[r.id, r.status] = r
    statuses = ("sent", "failed", "delivered", "undelivered")
    ids_with = {st: {i for (i, x) in first if x == st} for st in statuses}
    assert s["by_status"] == {st: len(v) for st, v in ids_with.items()}
    assert s["by_status"]["sent"] > 0
    assert s["by_status"]["delivered"] > 0
    outcome_ids = ids_with["sent"] | ids_with["failed"]
    assert s["with_outcome"] == len(outcome_ids)
    assert s["without_outcome"] == len(created) - len(outcome_ids)
    assert s["delivered"] == len(ids_with["delivered"])
    assert s["receipts_read"] == sum(1 for r in receipts if r.id in created)
    assert s["foreign"] == sum(1 for r in receipts if r.id not in created)

    codes = Counter(
        (st, r.error_code) for (i, st), r in first.items() if st in ("failed", "undelivered")
    )
    assert {(c["status"], c["code"]): c["count"] for c in s["outcomes"]} == dict(codes)

    sent = [r for (i, st), r in first.items() if st == "sent"]
    lat_sent = [float(r.ts - created[r.id]) for r in sent]
    assert s["latency_sent"]["count"] == len(lat_sent)
    assert s["latency_sent"]["p50_ms"] == nearest_rank(lat_sent, 50)
    assert s["latency_sent"]["p99_ms"] == nearest_rank(lat_sent, 99)
    lat_dlv = [float(first[i, "delivered"].ts - created[i]) for i in ids_with["delivered"]]
    assert s["latency_delivered"]["p50_ms"] == nearest_rank(lat_dlv, 50)
    assert s["latency_delivered"]["p99_ms"] == nearest_rank(lat_dlv, 99)

    last_outcome = max(r.ts for (i, st), r in first.items() if st in ("sent", "failed"))
    span = (last_outcome - min(created.values())) / 1000
    assert s["outcomes_per_second"] == pytest.approx(len(outcome_ids) / span)

    cost = sum(r.price or 0.0 for r in sent)
    assert s["cost_usd"] == pytest.approx(cost)
    assert s["cost_per_delivered_usd"] == pytest.approx(cost / len(ids_with["delivered"]))

    chains = [r.failovers for r in sent] + [
        r.failovers for (i, st), r in first.items() if st == "failed"
    ]
    assert s["failovers"]["attempts"] == sum(len(c) for c in chains)
    assert s["failovers"]["messages"] == sum(1 for c in chains if c)
    moved = Counter(f.carrier for c in chains for f in c)
    by_from = Counter[str]()
    for m in s["failovers"]["moves"]:
        by_from[m["from_carrier"]] += m["count"]
    assert by_from == moved

    check_outage(s["outage"], run["busy_carrier"], out, sent)
    check_policies(s, network, config)
    check_outputs(s, run, stdout, out)


def check_outage(
    outage: dict[str, Any] | None, busy: str, out: Path, sent: list[wire.Receipt]
) -> None:
    """The outage: the busy carrier, taken offline by the carriers during the load."""
    scenario = tomllib.loads((out / "scenario.toml").read_text())
    assert scenario["events"][0]["carriers"] == busy
    assert outage is not None
    assert outage["carrier"] == busy
    assert 0 < outage["start_s"] < DURATION
    assert outage["end_s"] is not None, "the carrier came back online during the run"
    assert outage["start_s"] < outage["end_s"]
    busy_sent = sum(1 for r in sent if r.carrier == busy)
    assert busy_sent > 0
    assert outage["share_during"] < outage["share_before"]


def check_policies(s: dict[str, Any], network: Path, config: dict[str, Any]) -> None:
    """The baselines are router.tools.economics's, the live row is this run's."""
    expected = compare(network, ECONOMICS_COUNT, config["seed"], config["rate"])
    rows = {r["name"]: r for r in s["policies"]}
    for p in expected:
        assert rows[p.name]["cost_per_delivered_usd"] == pytest.approx(p.cost_per_delivered_usd)
        assert rows[p.name]["delivery_rate"] == pytest.approx(p.delivery_rate)
    live = rows["supernet (this run)"]
    assert live["cost_per_delivered_usd"] == s["cost_per_delivered_usd"]


def check_outputs(s: dict[str, Any], run: dict[str, Any], stdout: str, out: Path) -> None:
    """Printed, written, and stopped."""
    assert f"{s['requests']:,}" in stdout
    assert f"{run['busy_carrier']} offline" in stdout
    for name in ("traffic-share.png", "latency.png", "cost-per-delivered.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "ledger.json").exists()  # the carriers wrote their ledger on SIGTERM
    assert '"fleet stopped"' in (out / "logs" / "fleet.log").read_text()
