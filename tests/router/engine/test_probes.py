"""``/healthz``, ``/readyz`` and ``/metrics`` on a worker's metrics port: a real HTTP
server on loopback, its state moved by hand."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from router.engine import probes
from router.engine.probes import Probes
from tests.ports import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[Probes, Clock, str]]:
    clock = Clock()
    state = Probes(clock)
    registry = CollectorRegistry()
    Counter("supernet_probe_test", "A counter the metrics path must show.", registry=registry)
    port = free_port()
    server = probes.serve("127.0.0.1", port, state, registry)
    try:
        yield state, clock, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_live_worker_is_healthy_and_a_silent_loop_is_not(
    served: tuple[Probes, Clock, str],
) -> None:
    state, clock, base = served
    assert get(f"{base}/healthz") == (200, b'{"ok": true, "why": []}')
    clock.now += probes.STALE_S + 1  # the loop stopped stamping its heartbeat
    status, body = get(f"{base}/healthz")
    assert status == 503
    assert json.loads(body)["why"] == [f"event loop silent for {probes.STALE_S + 1:.1f} s"]
    state.beat()
    assert get(f"{base}/healthz")[0] == 200


def test_ready_needs_partitions_both_brokers_and_no_drain(
    served: tuple[Probes, Clock, str],
) -> None:
    state, _, base = served
    status, body = get(f"{base}/readyz")
    assert status == 503
    assert json.loads(body)["why"] == [
        "kafka not connected",
        "mqtt not connected",
        "no request partitions assigned",
    ]
    state.connected.update(kafka=True, mqtt=True)
    state.assigned = 3
    assert get(f"{base}/readyz") == (200, b'{"ok": true, "why": []}')
    state.connected["mqtt"] = False
    assert json.loads(get(f"{base}/readyz")[1])["why"] == ["mqtt not connected"]
    state.connected["mqtt"] = True
    state.draining = True
    status, body = get(f"{base}/readyz")
    assert (status, json.loads(body)["why"]) == (503, ["draining"])
    assert get(f"{base}/healthz")[0] == 200  # draining is not dead


def test_every_other_path_serves_the_metrics(served: tuple[Probes, Clock, str]) -> None:
    _, _, base = served
    for path in ("/metrics", "/"):
        status, body = get(base + path)
        assert status == 200
        assert b"supernet_probe_test_total 0.0" in body
