"""Health: published moving averages and the breaker state machine."""

from __future__ import annotations

import pytest

from router.core.health import Breaker, Health, HealthConfig
from router.core.types import Carrier

C = Carrier("a", "a", "direct", 2.0, 0.9, 10.0)


def test_small_moves_stay_unpublished_and_large_ones_publish_by_country() -> None:
    health = Health(HealthConfig(alpha=0.1, rate_step=0.05, latency_step=0.5))
    health.delivery(C, "GB", True, 2.1, now=0.0)  # rate 0.9 -> 0.91, latency +5%
    assert health.tick(0.0) == set()
    assert health.estimate(C, "GB") == (0.9, 2.0)
    assert health.live(C, "GB")[0] == pytest.approx(0.91)
    for _ in range(5):
        health.delivery(C, "GB", False, None, now=0.5)
    assert health.estimate(C, "GB") == (0.9, 2.0)  # not before the tick
    assert health.tick(1.0) == {"GB"}
    rate, latency = health.estimate(C, "GB")
    assert rate < 0.85
    assert latency == pytest.approx(2.01)
    assert health.estimate(C, "DE") == (0.9, 2.0)  # other countries keep the prior


def test_breaker_cooldown_doubles_on_failed_probes() -> None:
    cfg = HealthConfig(failure_threshold=2, cooldown_s=10.0, max_cooldown_s=25.0)
    health = Health(cfg)
    health.submit_failed("a", now=0.0)
    assert health.breaker("a") is Breaker.CLOSED
    health.submit_failed("a", now=0.0)
    assert health.breaker("a") is Breaker.OPEN
    assert "a" in health.unavailable  # skipped when choosing ...
    assert health.tick(0.0) == set()  # ... without a country whose rankings must go
    health.tick(9.9)
    assert health.breaker("a") is Breaker.OPEN
    health.tick(10.0)
    assert health.breaker("a") is Breaker.HALF_OPEN
    health.probe_taken("a")
    assert health.breaker("a") is Breaker.PROBING
    health.submit_failed("a", now=10.0, why="timeout")
    assert health.breaker("a") is Breaker.OPEN
    assert "probe failed" in health.breaker_reason("a")
    health.tick(29.9)
    assert health.breaker("a") is Breaker.OPEN  # 20 s now
    health.tick(30.0)
    health.probe_taken("a")
    health.submit_failed("a", now=30.0)
    health.tick(54.9)
    assert health.breaker("a") is Breaker.OPEN  # capped at 25 s
    health.tick(55.0)
    assert health.breaker("a") is Breaker.HALF_OPEN
    health.submit_ok("a")
    assert health.breaker("a") is Breaker.CLOSED
    assert "a" not in health.unavailable
    assert "a" not in health.half_open


def test_success_resets_the_consecutive_failure_count() -> None:
    health = Health(HealthConfig(failure_threshold=3))
    for _ in range(10):
        health.submit_failed("a", now=0.0)
        health.submit_failed("a", now=0.0)
        health.submit_ok("a")
    assert health.breaker("a") is Breaker.CLOSED
