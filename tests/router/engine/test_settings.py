"""Worker settings: sources in order, and the checks that keep the guarantees true."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# --- to_argv: the inverse of parsing the worker's flags -----------------------------------

ALL = [f.name for f in dataclasses.fields(settings.WorkerSettings)]


def parse(argv: list[str]) -> settings.WorkerSettings:
    """What `supernet worker ARGV` runs with, with no environment and no config file."""
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return settings.load(parser.parse_args(argv), {})


def test_default_settings_need_no_flags() -> None:
    s = settings.WorkerSettings()
    assert s.to_argv() == []
    assert parse(s.to_argv()) == s
    assert parse(s.to_argv(ALL)) == s
    assert len(s.to_argv(ALL)) == 2 * len(ALL)


def test_only_the_changed_settings_are_written() -> None:
    s = dataclasses.replace(settings.WorkerSettings(), group="g", submit_timeout_s=2.5)
    assert s.to_argv() == ["--group", "g", "--submit-timeout-s", "2.5"]
    assert s.to_argv(["group"]) == ["--group", "g"]
    with pytest.raises(settings.SettingsError, match="no such worker settings: grup"):
        s.to_argv(["grup"])


def test_a_value_that_looks_like_a_flag_stays_a_value() -> None:
    s = dataclasses.replace(settings.WorkerSettings(), network="--help", instance="-w1")
    assert "--network=--help" in s.to_argv()
    assert parse(s.to_argv()) == s


text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
seconds = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=1, max_value=10**9)
ports = st.integers(min_value=0, max_value=65535)


@st.composite
def worker_settings(draw: st.DrawFn) -> settings.WorkerSettings:
    values: dict[str, Any] = {
        "bootstrap": draw(text), "requests_topic": draw(text), "receipts_topic": draw(text),
        "dead_letter_topic": draw(text), "attempts_topic": draw(text), "group": draw(text),
        "group_instance_id": draw(text), "partitions": draw(counts), "mqtt_host": draw(text),
        "mqtt_port": draw(ports), "dlr_group": draw(text), "network": draw(text),
        "max_in_flight": draw(counts), "submit_timeout_s": draw(seconds),
        "max_attempts": draw(st.integers(1, 20)), "hold_limit_s": draw(seconds),
        "dedupe_max_ids": draw(counts), "commit_interval_s": draw(seconds),
        "report_horizon_s": draw(seconds), "report_memory": draw(counts),
        "drain_timeout_s": draw(seconds), "metrics_host": draw(text),
        "metrics_port": draw(ports), "prometheus_targets": draw(text),
        "instance": draw(text), "security": draw(st.sampled_from(["on", "off"])),
        "secrets_dir": draw(text), "mqtt_user": draw(text), "kafka_user": draw(text),
        "log_format": draw(st.sampled_from(["auto", "json", "console"])),
        "log_level": draw(st.sampled_from(["debug", "info", "warning", "error"])),
    }  # fmt: skip
    longest = values["hold_limit_s"] + values["max_attempts"] * 2 * values["submit_timeout_s"]
    values["dedupe_window_s"] = longest + draw(seconds)
    assert set(values) == set(ALL), "a new setting needs a strategy here"
    return settings.WorkerSettings(**values)


@given(worker_settings(), st.booleans())
def test_parsing_the_flags_gives_the_settings_back(s: settings.WorkerSettings, every: bool) -> None:
    assert parse(s.to_argv(ALL if every else None)) == s
