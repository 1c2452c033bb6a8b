"""Fixtures of the broker tests: the carriers' (small hand-made networks, unique ids), and
the four-country network the engine's tests run on (a module may define its own)."""

from pathlib import Path

import pytest

from carriers import generator
from carriers.network import reduce_network
from tests.carriers.conftest import generated, network_dir, small_network, uid

__all__ = ["generated", "network", "network_dir", "small_network", "uid"]

REGIONS = {"GB", "DE", "FR", "NL"}


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed 1's carriers for four countries: ~190 carriers, directs and aggregators."""
    root = tmp_path_factory.mktemp("network")
    generator.write(generator.generate(1), root / "full")
    return reduce_network(root / "full", root / "small", REGIONS)
