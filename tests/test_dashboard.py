"""The Grafana dashboard refers only to metrics that exist (DESIGN.md section 7).

Every PromQL expression in ``deploy/grafana/supernet.json`` is checked against the names
the worker (``router.engine.metrics``) and the carrier simulator (``carriers.ledger``) really
expose, label matchers against their labels, and, when ``promtool`` is installed, the
expressions are parsed by Prometheus itself (as recording rules, offline).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from carriers.ledger import Ledger, register_metrics
from router.engine.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "supernet.json"
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "supernet.rules.yml"

# Labels Prometheus adds at scrape time, and the histogram bucket label.
SCRAPE_LABELS = frozenset({"instance", "job", "le"})
# Grafana's own variables, replaced by a valid duration before PromQL parsing.
GRAFANA_DURATIONS = ("$__rate_interval", "$__interval", "$__range")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC = re.compile(r"(?<![\w:])supernet_[A-Za-z0-9_:]*")
_RECORDED = re.compile(r"(?<![\w:])supernet:[A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(?<![\w:])(supernet_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested in collapsed rows."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard["panels"])


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target."""
    return [
        (panel.get("title", ""), target.get("expr", ""))
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    """The ``supernet_*`` names an expression refers to (string literals ignored)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def matcher_labels(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for every label matcher in a ``supernet_*{...}`` selector."""
    return [
        (metric, label)
        for metric, body in _SELECTOR.findall(_STRING.sub('""', expr))
        for label in _MATCHER_LABEL.findall(body)
    ]


def exposed() -> dict[str, set[str]]:
    """Every sample name the worker and the carriers expose, with its label names."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for value in vars(metrics).values():
        # A labelled metric has no samples until a child exists: make one of each.
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*("x" for _ in value._labelnames))
    metrics.decision_seconds.observe(1e-5)
    metrics.submit_seconds.observe(0.02)

    ledger = Ledger(["c1"])
    carrier = ledger["c1"]
    carrier.online = True
    carrier.submits = 3
    carrier.accepted = 1
    carrier.delivered = 1
    carrier.reject("throttled")
    carrier.ignored_offline = 1
    register_metrics(registry, ledger)

    names: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def known() -> dict[str, set[str]]:
    return exposed()


def test_exposed_names_cover_both_processes(known: dict[str, set[str]]) -> None:
    # Guards the check itself: if collection found nothing, every lookup would fail
    # loudly, but an empty ledger would silently hide the carrier metrics.
    assert "supernet_routed_total" in known
    assert "supernet_decision_seconds_bucket" in known
    assert "supernet_carrier_rejections_total" in known
    assert "supernet_carrier_online" in known


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["time"] == {"from": "now-15m", "to": "now"}
    assert dashboard["refresh"] == "5s"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [p["title"] for p in all_panels(dashboard) if p["type"] == "row"]
    assert rows == ["Traffic", "Latency", "Health", "Economics", "Carriers"]


def test_every_panel_has_title_and_datasource(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        assert panel.get("title", "").strip(), f"panel {panel.get('id')} has no title"
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, title
        assert panel.get("targets"), f"{title}: no queries"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], title
            assert target.get("expr", "").strip(), f"{title}: empty expression"


def recorded_names(expr: str) -> set[str]:
    """The recording rules (``supernet:...``) an expression refers to."""
    return set(_RECORDED.findall(_STRING.sub('""', expr)))


def recording_rules() -> set[str]:
    """The names ``deploy/prometheus/supernet.rules.yml`` records."""
    return set(re.findall(r"^\s*- record: (\S+)", RULES.read_text(), flags=re.M))


def test_every_metric_exists(dashboard: dict[str, Any], known: dict[str, set[str]]) -> None:
    missing: list[str] = []
    recorded = recording_rules()
    for title, expr in expressions(dashboard):
        names, rules = metric_names(expr), recorded_names(expr)
        if not names and not rules:
            missing.append(f"{title}: no supernet_ metric or recorded rule in {expr!r}")
        missing += [f"{title}: {name} in {expr!r}" for name in sorted(names - known.keys())]
        missing += [f"{title}: {name} is not recorded" for name in sorted(rules - recorded)]
    assert not missing, "unknown metrics:\n" + "\n".join(missing)


def test_every_label_matcher_exists(dashboard: dict[str, Any], known: dict[str, set[str]]) -> None:
    wrong = [
        f"{title}: {metric} has no label {label!r}"
        for title, expr in expressions(dashboard)
        for metric, label in matcher_labels(expr)
        if label not in known.get(metric, set()) | SCRAPE_LABELS
    ]
    assert not wrong, "\n".join(wrong)


def test_extraction_helpers() -> None:
    expr = 'sum(rate(supernet_a_total{job="supernet_not_a_metric"}[1m])) / supernet_b'
    assert metric_names(expr) == {"supernet_a_total", "supernet_b"}
    assert recorded_names("topk(3, supernet:a:rate1m) / supernet_b") == {"supernet:a:rate1m"}
    assert matcher_labels(expr) == [("supernet_a_total", "job")]


def test_expressions_parse_with_promtool(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'): PromQL not parsed")
    rules = []
    for i, (_title, expr) in enumerate(expressions(dashboard)):
        for variable in GRAFANA_DURATIONS:
            expr = expr.replace(variable, "1m")
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    # JSON is YAML, so promtool reads this file as a rules file.
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr
