"""Fixtures of the load generator's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.tools.load.numbers import NumberPlan, build_plan
from tests.router.tools.load.load_helpers import write_network


@pytest.fixture(scope="session")
def tiny_network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_network(tmp_path_factory.mktemp("network"))


@pytest.fixture(scope="session")
def tiny_plan(tiny_network: Path) -> NumberPlan:
    return build_plan(tiny_network, seed=3)
