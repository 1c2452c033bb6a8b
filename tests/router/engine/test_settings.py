"""Worker settings: sources in order, and the checks that keep the guarantees true."""

from __future__ import annotations

import pytest

from router.engine import settings


def test_environment_overrides_defaults() -> None:
    s = settings.load(None, {"SUPERNET_HOLD_LIMIT_S": "12.5", "SUPERNET_ATTEMPTS_TOPIC": "a.b"})
    assert (s.hold_limit_s, s.attempts_topic) == (12.5, "a.b")


def test_a_dedupe_window_shorter_than_a_message_can_live_is_refused() -> None:
    env = {"SUPERNET_DEDUPE_WINDOW_S": "60", "SUPERNET_SUBMIT_TIMEOUT_S": "10"}
    with pytest.raises(settings.SettingsError, match="dedupe_window_s must be at least 90"):
        settings.load(None, env)
    ok = settings.load(None, {**env, "SUPERNET_DEDUPE_WINDOW_S": "90"})
    assert ok.dedupe_window_s == 90


@pytest.mark.parametrize("name", ["hold_limit_s", "dedupe_max_ids"])
def test_non_positive_values_are_refused(name: str) -> None:
    with pytest.raises(settings.SettingsError, match=f"{name} must be > 0"):
        settings.load(None, {settings.env_name(name): "0"})


def test_the_attempts_log_follows_the_requests_topic() -> None:
    assert settings.load(None, {"SUPERNET_REQUESTS_TOPIC": "x.req"}).attempts() == "x.req.attempts"
    chosen = settings.load(None, {"SUPERNET_ATTEMPTS_TOPIC": "mine"})
    assert chosen.attempts() == "mine"
