"""Fixtures for the carriers simulator: the seed-1 network (generated once per session)
and small hand-made networks whose carriers behave exactly as a test needs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from carriers import deck, generator, simulation
from carriers.simulation import CarrierTruth, SimulationFile
from router.contracts import network_file
from router.contracts.network_file import NetworkFile
from tests.carriers.carrier_helpers import spec

SEED = 1


@pytest.fixture(scope="session")
def generated() -> generator.Generated:
    return generator.generate(SEED)


@pytest.fixture(scope="session")
def network_dir(tmp_path_factory: pytest.TempPathFactory, generated: generator.Generated) -> Path:
    out = tmp_path_factory.mktemp("network-seed-1")
    generator.write(generated, out)
    return out


SmallNetwork = Callable[[list[CarrierTruth]], Path]


@pytest.fixture
def small_network(tmp_path: Path) -> SmallNetwork:
    """Write a network of the given carriers, each with the deck line 4477 at 0.01 USD."""

    def make(truths: list[CarrierTruth]) -> Path:
        (tmp_path / "decks").mkdir(exist_ok=True)
        specs = [spec(t.id, t.throughput_mps) for t in truths]
        for s in specs:
            deck.write(
                tmp_path / s.deck, [deck.DeckLine("4477", "GB mobile", "0.01")], "2025-01-01"
            )
        network_file.dump(NetworkFile(version=1, name="test", carriers=specs, seed=0), tmp_path)
        simulation.dump(SimulationFile(version=1, seed=0, carriers=truths), tmp_path)
        return tmp_path

    return make


@pytest.fixture
def uid() -> str:
    """A unique carrier-id stem, so tests never meet each other's retained statuses."""
    return f"t{uuid.uuid4().hex[:10]}"
