"""The generated network: real numbering data, reproducible, big enough, well-formed."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import pytest

from carriers import deck, generator, network, numbering, simulation
from router.contracts import network_file
from router.core.network import load_network

PRICE = re.compile(r"^\d+\.\d{1,6}$|^\d+$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def test_same_seed_gives_identical_files(network_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    again.mkdir()
    generator.write(generator.generate(1), again)
    first = sorted(p.relative_to(network_dir) for p in network_dir.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        assert (network_dir / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_another_seed_gives_another_network(generated: generator.Generated) -> None:
    other = generator.generate(2)
    assert other.network.carriers != generated.network.carriers
    assert [c.id for c in other.network.carriers] == [c.id for c in generated.network.carriers]


def test_targets(network_dir: Path) -> None:
    s = network.stats(network_dir)
    assert s.direct >= 1200
    assert s.aggregators >= 8
    assert s.prefixes >= 25_000
    assert s.country_codes >= 200
    assert s.aggregator_rate_lines >= 200_000


def test_network_file_loads_and_every_carrier_has_truth_and_deck(network_dir: Path) -> None:
    net = network_file.load(network_dir)
    sim = simulation.load(network_dir)
    assert [c.id for c in net.carriers] == [t.id for t in sim.carriers]
    for c in net.carriers:
        assert (network_dir / c.deck).is_file()
    assert {p.name for p in (network_dir / "decks").iterdir()} == {
        Path(c.deck).name for c in net.carriers
    }


def test_decks_follow_the_csv_layout(network_dir: Path, generated: generator.Generated) -> None:
    date = generator.effective_date(1)
    for c in generated.network.carriers[::50] + generated.network.carriers[-16:]:
        with (network_dir / c.deck).open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert tuple(rows[0]) == deck.HEADER
        prefixes = [r[0] for r in rows[1:]]
        assert len(prefixes) == len(set(prefixes)), c.id
        for prefix, destination, price, currency, effective in rows[1:]:
            assert prefix.isdigit()
            assert not prefix.startswith("0")
            assert destination
            assert PRICE.match(price), price
            assert float(price) > 0
            assert currency == "USD"
            assert effective == date
            assert DATE.match(effective)


def test_direct_carriers_sit_on_their_operators_real_prefixes(
    generated: generator.Generated,
) -> None:
    by_id = {c.id: c for c in generated.network.carriers}
    ee = by_id["gb-ee"]
    assert ee.kind == "direct"
    assert ee.countries == ["GB"]
    assert ee.name == "EE"
    real = {op.prefix for op in numbering.operator_prefixes() if op.operator == "EE"}
    assert {line.prefix for line in generated.decks["gb-ee"]} <= real


def test_aggregators_cover_countries_cheaper_and_dearer(generated: generator.Generated) -> None:
    aggs = [c for c in generated.network.carriers if c.kind == "aggregator"]
    assert len(aggs) >= 8
    assert any(c.id.startswith("agg-global") for c in aggs)
    assert any(c.id.startswith("agg-eu") for c in aggs)
    direct_price = float(generated.decks["gb-ee"][0].price)
    prefix = generated.decks["gb-ee"][0].prefix
    agg_prices = []
    for c in aggs:
        lines = {line.prefix: float(line.price) for line in generated.decks[c.id]}
        if prefix in lines:
            assert "44" in lines  # the country-wide line too
            agg_prices.append(lines[prefix])
    assert min(agg_prices) < direct_price < max(agg_prices)
    sim = {t.id: t for t in generated.simulation.carriers}
    mean_direct = sum(
        t.delivery_probability for t in sim.values() if not t.id.startswith("agg-")
    ) / sum(1 for t in sim.values() if not t.id.startswith("agg-"))
    mean_agg = sum(sim[c.id].delivery_probability for c in aggs) / len(aggs)
    assert mean_agg < mean_direct
    assert all(sim[c.id].destinations for c in aggs)
    slowest_direct = sorted(sim[c.id].report_delay_ms for c in generated.network.carriers)
    assert (
        sum(sim[c.id].report_delay_ms for c in aggs) / len(aggs)
        > slowest_direct[len(slowest_direct) // 2]
    )


def test_advertised_values_are_not_the_truth(generated: generator.Generated) -> None:
    sim = {t.id: t for t in generated.simulation.carriers}
    differ = sum(
        1 for c in generated.network.carriers if c.delivery_rate != sim[c.id].delivery_probability
    )
    assert differ > len(generated.network.carriers) // 2


def test_ids_are_unique_and_topic_safe(generated: generator.Generated) -> None:
    ids = [c.id for c in generated.network.carriers]
    assert len(ids) == len(set(ids))
    assert all(network_file.CARRIER_ID.match(i) for i in ids)


def test_decks_import_with_the_router(network_dir: Path, generated: generator.Generated) -> None:
    routing_deck = pytest.importorskip("router.core.deck")
    for c in generated.network.carriers[::100] + generated.network.carriers[-16:]:
        rates = routing_deck.load_deck(network_dir / c.deck)
        assert len(rates) == len(generated.decks[c.id])


def test_example_scenario_names_carriers_of_the_seed_network(
    generated: generator.Generated,
) -> None:
    from carriers import scenario

    ids = [c.id for c in generated.network.carriers]
    for event in scenario.load(scenario.example_path()).events:
        assert any(scenario.matches(event.carriers, i) for i in ids), event.carriers


def test_the_simulator_bills_what_the_router_quotes_from_effective_from(
    network_dir: Path, tmp_path: Path
) -> None:
    """A future-dated row: neither side uses it before its date, both from its date on."""
    small = network.reduce_network(network_dir, tmp_path / "gb", {"GB"})
    path = small / "decks" / "gb-ee.csv"
    prefix, _, price, _, since = next(csv.reader(path.read_text().splitlines()[1:]))
    later = dt.date.fromisoformat(since) + dt.timedelta(days=400)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{prefix},EE from {later},0.0999,USD,{later.isoformat()}\n")
    number = prefix + "0" * (12 - len(prefix))
    for day, expected in ((later - dt.timedelta(days=1), float(price)), (later, 0.0999)):
        endpoints, _ = network.load_endpoints(small, only="gb-ee", as_of=day)
        billed = endpoints["gb-ee"].price_for(number)
        entry = load_network(small, day).lookup(number)
        assert entry is not None
        quoted = next(q.price for q in entry.quotes if q.carrier == "gb-ee")
        assert billed == quoted == expected, day
