"""The code registry: one meaning per (status, code), and the README's table is its copy."""

from __future__ import annotations

import re
from pathlib import Path

from router.contracts.codes import TABLE, Code, Scope, meaning

README = Path(__file__).resolve().parents[3] / "README.md"


def test_a_number_means_what_its_status_says() -> None:
    assert "landline" in meaning(Scope.UNDELIVERED, Code.LANDLINE_OR_UNREACHABLE_CARRIER)
    assert "breaker" in meaning("failed", Code.CARRIERS_UNAVAILABLE)
    assert meaning("failed", 30036).startswith("validity period")
    assert meaning("undelivered", 1) == "unknown code 1"
    assert meaning("failed", Code.LANDLINE_OR_UNREACHABLE_CARRIER) == "unknown code 30006"


def test_every_code_has_a_meaning_somewhere() -> None:
    described = {code for scoped in TABLE.values() for code in scoped}
    assert described == set(Code)


def test_breaker_open_has_a_number_of_its_own() -> None:
    failed = set(TABLE[Scope.FAILED])
    undelivered = set(TABLE[Scope.UNDELIVERED])
    assert Code.CARRIERS_UNAVAILABLE in failed
    assert not failed & undelivered


def _readme_rows() -> set[tuple[int, str, str]]:
    text = README.read_text()
    section = text[text.index("## Error codes") :]
    section = section[: section.index("\n## ", 3)]
    rows = set()
    for line in section.splitlines():
        m = re.fullmatch(r"\| (\d{5}) \| (\w+) \| (.+) \|", line)
        if m:
            rows.add((int(m[1]), m[2], m[3]))
    return rows


def test_the_readme_table_is_the_registry() -> None:
    registry = {
        (int(code), str(scope), text)
        for scope, scoped in TABLE.items()
        for code, text in scoped.items()
    }
    assert _readme_rows() == registry
