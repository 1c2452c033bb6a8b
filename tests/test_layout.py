"""The layout's rules that the import contracts cannot see: module size, and a README
whose layout table names every room of the tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500
CODE = ("router", "carriers", "benchmarks", "tests")


def _modules() -> list[Path]:
    return sorted(p for top in CODE for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_500_lines(path: Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def _layout_paths() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout\n") :]
    return set(re.findall(r"^\| `([^`]+)/` \|", section, flags=re.M))


def test_the_readme_layout_names_every_room() -> None:
    rooms = {
        f"router/{p.name}" for p in (ROOT / "router").iterdir() if (p / "__init__.py").exists()
    }
    rooms -= {"router/examples"}  # data: the example network shipped in the package
    tops = {"carriers", "deploy", "benchmarks", "tests"}
    assert _layout_paths() == rooms | tops
