"""The alert and recording rules (``deploy/prometheus/supernet.rules.yml``): Prometheus's
own checker and unit tests pass (``promtool test rules``), every metric and label they
name exists in what the worker and the carriers expose (as for the dashboard), and every
alert is documented (severity, summary, description) and has a firing test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.test_dashboard import (
    SCRAPE_LABELS,
    exposed,
    matcher_labels,
    metric_names,
    recorded_names,
)

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = RULES_DIR / "supernet.rules.yml"
TESTS = RULES_DIR / "supernet.test.yml"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"]]


def _promtool() -> str:
    promtool = shutil.which("promtool")
    # deploy/bootstrap.sh installs it (Debian package prometheus): never skipped.
    assert promtool is not None, "promtool is missing: run deploy/bootstrap.sh"
    return promtool


def _run(*args: str) -> str:
    done = subprocess.run([_promtool(), *args], capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_the_rules_parse() -> None:
    assert f"SUCCESS: {len(_rules())} rules found" in _run("check", "rules", str(RULES))


def test_the_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in _run("test", "rules", str(TESTS))


def test_every_metric_and_label_in_the_rules_exists() -> None:
    known = exposed()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    wrong = []
    for rule in _rules():
        name, expr = rule.get("alert") or rule["record"], rule["expr"]
        wrong += [f"{name}: no metric {m}" for m in sorted(metric_names(expr) - known.keys())]
        wrong += [
            f"{name}: {metric} has no label {label!r}"
            for metric, label in matcher_labels(expr)
            if label not in known.get(metric, set()) | SCRAPE_LABELS
        ]
        # A recording rule's name is used only once it is defined.
        wrong += [f"{name}: {r} is not recorded" for r in recorded_names(expr) - recorded]
    assert not wrong, "\n".join(wrong)


def test_every_alert_is_documented_and_tested() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) >= 10
    fired = {
        case["alertname"]
        for test in _load(TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    problems = []
    for rule in alerts:
        name = rule["alert"]
        if rule.get("labels", {}).get("severity") not in ("page", "warning"):
            problems.append(f"{name}: severity must be page or warning")
        for field in ("summary", "description"):
            if not rule.get("annotations", {}).get(field, "").strip():
                problems.append(f"{name}: no {field}")
        if name not in fired:
            problems.append(f"{name}: no test in {TESTS.name} makes it fire")
    assert not problems, "\n".join(problems)
