"""SIGHUP's reload: a changed deck goes live between two decisions; a reload that would add
or remove carriers, or whose decks do not load, is refused and changes nothing."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from router.contracts import network_file
from router.core.decision import Router
from router.core.network import example_network, load_network
from router.core.types import MARKETING
from router.engine.metrics import Metrics
from router.engine.reload import reload_once

UK = "+447700900123"


@pytest.fixture
def network(tmp_path: Path) -> Path:
    return Path(shutil.copytree(example_network(), tmp_path / "network"))


def _reprice(deck: Path, factor: float) -> None:
    rows = list(csv.reader(io.StringIO(deck.read_text())))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows[0])
    price = rows[0].index("price")
    for row in rows[1:]:
        row[price] = f"{float(row[price]) * factor:.4f}"
        writer.writerow(row)
    deck.write_text(out.getvalue())


def _deck_of(network: Path, carrier: str) -> Path:
    spec = next(c for c in network_file.load(network).carriers if c.id == carrier)
    return network / spec.deck


def _reloads(metrics: Metrics, result: str) -> float | None:
    sample = "supernet_network_reloads_total"
    return metrics.registry.get_sample_value(sample, {"result": result})


async def test_a_repriced_deck_moves_traffic_after_the_reload(network: Path) -> None:
    router = Router(load_network(network))
    carriers = dict(router.table.carriers)
    metrics = Metrics(CollectorRegistry())
    before = router.decide(UK, "hello", MARKETING)
    assert before.carrier is not None
    _reprice(_deck_of(network, before.carrier), 100.0)
    assert router.decide(UK, "hello", MARKETING).carrier == before.carrier  # not yet

    assert await reload_once(router, carriers, network, metrics) == "ok"
    after = router.decide(UK, "hello", MARKETING)
    assert after.carrier != before.carrier
    assert _reloads(metrics, "ok") == 1


async def test_a_reload_that_changes_the_carriers_is_refused(network: Path) -> None:
    router = Router(load_network(network))
    table = router.table
    metrics = Metrics(CollectorRegistry())
    doc = json.loads((network / "network.json").read_text())
    doc["carriers"] = doc["carriers"][1:]
    (network / "network.json").write_text(json.dumps(doc))

    assert await reload_once(router, dict(table.carriers), network, metrics) == "refused"
    assert router.table is table
    assert _reloads(metrics, "refused") == 1


async def test_a_deck_that_does_not_load_leaves_the_table_as_it_was(network: Path) -> None:
    router = Router(load_network(network))
    table = router.table
    metrics = Metrics(CollectorRegistry())
    carrier = next(iter(table.carriers))
    _deck_of(network, carrier).write_text("prefix,destination,price,currency,effective_from\nx\n")

    assert await reload_once(router, dict(table.carriers), network, metrics) == "failed"
    assert router.table is table
    assert _reloads(metrics, "failed") == 1
