"""The local Prometheus cannot be stopped or emptied by a local client: its lifecycle and
admin APIs are off, and it listens on loopback only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from router.support.infra_settings import InfraSettings, host_in_url

pytestmark = pytest.mark.integration


def _post(url: str) -> int:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as e:
        return e.code


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_quit_reload_and_admin_are_refused_and_prometheus_stays_up(infra: InfraSettings) -> None:
    base = f"http://{host_in_url(infra.host)}:{infra.prometheus_port}"
    assert _ready(base)
    for path in ("/-/quit", "/-/reload", "/api/v1/admin/tsdb/snapshot"):
        status = _post(base + path)
        assert status >= 400, f"POST {path} answered {status}"
    assert _ready(base), "Prometheus stopped after a POST"


def test_the_local_prometheus_loads_the_projects_rules(infra: InfraSettings) -> None:
    base = f"http://{host_in_url(infra.host)}:{infra.prometheus_port}"
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as response:
        groups = json.loads(response.read())["data"]["groups"]
    names = {g["name"]: {r["name"] for r in g["rules"]} for g in groups}
    assert {"supernet.recording", "supernet.alerts"} <= names.keys()
    assert "SupernetOutcomesStopped" in names["supernet.alerts"]
    assert "supernet:consumer_lag:sum" in names["supernet.recording"]
    assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups
