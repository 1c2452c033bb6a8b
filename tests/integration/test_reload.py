"""SIGHUP under traffic: a worker reloads its network directory and swaps the route table
while requests flow; nothing is lost, and the repriced carrier loses the traffic."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from router.contracts import network_file, wire
from router.support.infra_settings import InfraSettings
from tests.integration.harness import mobile_numbers, requests
from tests.integration.test_worker import Stack

pytestmark = pytest.mark.integration


def _reprice(deck: Path, factor: float) -> None:
    rows = list(csv.reader(io.StringIO(deck.read_text())))
    price = rows[0].index("price")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        row[price] = f"{float(row[price]) * factor:.4f}"
        writer.writerow(row)
    deck.write_text(out.getvalue())


def _sent_by(rs: list[wire.Receipt], ids: set[str]) -> Counter[str]:
    return Counter(r.carrier or "" for r in rs if r.status == "sent" and r.id in ids and r.carrier)


async def test_sighup_swaps_the_table_under_traffic_and_loses_nothing(
    infra: InfraSettings, network: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(network, tmp_path / "network"))
    stack = Stack(infra, copy, tmp_path / "logs")
    try:
        await stack.start()
        await stack.carriers()
        worker = await stack.worker(f"reload-{stack.tag}")
        numbers = mobile_numbers(copy, 900, seed=11)
        reqs = requests(numbers, f"r{stack.tag}")
        before, during, after = reqs[:300], reqs[300:600], reqs[600:]

        ids_before = await stack.send(before)
        rs = await stack.outcomes_for(ids_before)
        busiest, sends = _sent_by(rs, ids_before).most_common(1)[0]
        spec = next(c for c in network_file.load(copy).carriers if c.id == busiest)
        _reprice(copy / spec.deck, 100.0)

        # The reload lands while the second third is in flight.
        sending = asyncio.create_task(stack.send(during))
        await asyncio.sleep(0.05)
        worker.signal(signal.SIGHUP)
        ids_during = await sending
        await worker.wait_for("network reloaded", timeout=60)
        ids_after = await stack.send(after)

        every = ids_before | ids_during | ids_after
        rs = await stack.outcomes_for(every)
        counts = Counter(r.id for r in rs if r.status in ("sent", "failed") and r.id in every)
        assert set(counts) == every
        assert max(counts.values()) == 1, "a request got two outcomes"
        later = _sent_by(rs, ids_after)[busiest]
        assert later < sends / 2, f"{busiest} kept {later} of its {sends} sends after repricing"
        assert "network reload failed" not in worker.text()
    finally:
        await stack.close()
