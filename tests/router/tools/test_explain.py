"""`supernet explain`: exit codes, JSON output, the example network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from router.cli import main
from router.contracts.codes import Code
from router.core.network import example_network


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["explain", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_routed_number_lists_every_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(capsys, "+447700900123", "--class", "otp")
    assert code == 0
    assert out["code"] == 0
    assert out["country"] == "GB"
    assert out["matched_prefix"] == "447700"
    cands = out["candidates"]
    assert isinstance(cands, list)
    assert {c["carrier"] for c in cands} == {
        "gb-ee", "gb-o2", "agg-global", "agg-premium", "agg-budget",
    }  # fmt: skip
    assert cands[0]["chosen"] is True
    assert cands[0]["carrier"] == out["carrier"]
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores)
    assert out["fallbacks"] == [c["carrier"] for c in cands[1:]]


def test_marketing_prefers_price_and_otp_reliability(capsys: pytest.CaptureFixture[str]) -> None:
    _, otp = run_json(capsys, "+447700900123", "--class", "otp")
    _, marketing = run_json(capsys, "+447700900123", "--class", "marketing")
    assert otp["carrier"] == "gb-ee"
    assert marketing["carrier"] == "agg-budget"


def test_invalid_number_exits_2_with_21211(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(capsys, "+44")
    assert code == 2
    assert out["code"] == Code.INVALID_DESTINATION
    code = main(["explain", "not-a-number"])
    assert code == 2
    assert "21211" in capsys.readouterr().out


def test_no_route_and_max_price_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(capsys, "+8613800138000")
    assert (code, out["code"]) == (1, Code.NO_ROUTE)
    code, out = run_json(capsys, "+447700900123", "--max-price", "0.001")
    assert (code, out["code"]) == (1, Code.NO_ROUTE_WITHIN_PRICE)


def test_body_sets_segments_and_price(capsys: pytest.CaptureFixture[str]) -> None:
    _, one = run_json(capsys, "+4915112345678", "--class", "otp", "--body", "hi")
    _, three = run_json(capsys, "+4915112345678", "--class", "otp", "--body", "ж" * 135)
    assert (one["segments"], three["segments"]) == (1, 3)
    assert three["encoding"] == "UCS-2"
    assert three["price"] == pytest.approx(3 * one["price"])  # type: ignore[operator]


def test_table_output_names_the_choice(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "+14155550123"]) == 0
    text = capsys.readouterr().out
    assert "route to" in text
    assert "us-" in text


def test_bad_network_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(example_network(), tmp_path / "net")
    deck = tmp_path / "net" / "decks" / "gb-ee.csv"
    deck.write_text(deck.read_text() + "447,UK,abc,USD,2025-01-01\n")
    code = main(["explain", "+447700900123", "--network", str(tmp_path / "net")])
    assert code == 2
    assert "price 'abc'" in capsys.readouterr().err
