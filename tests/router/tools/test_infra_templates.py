"""The brokers' config templates ship inside the package and render completely."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from router.support.infra_settings import InfraSettings
from router.tools.infra.brokers import TEMPLATES, Kafka, Mosquitto, Prometheus


def test_every_template_is_package_data() -> None:
    found = {f"{d.name}/{f.name}" for d in TEMPLATES.iterdir() if d.is_dir() for f in d.iterdir()}
    assert found == {
        "kafka/pom.xml",
        "kafka/log4j2.properties",
        "kafka/server.properties",
        "mosquitto/mosquitto.conf",
        "prometheus/prometheus.yml",
    }


@pytest.mark.parametrize(
    ("broker", "template", "fields"),
    [
        (
            Kafka,
            "server.properties",
            {
                "node_id": 1,
                "voters": "1@[::1]:2",
                "replicas": 1,
                "min_insync": 1,
                "data_dir": "/d",
                "listeners": "listeners=x",
            },
        ),
        (
            Mosquitto,
            "mosquitto.conf",
            {"port": 1, "log_file": "/l", "security": "allow_anonymous true", "user": "u"},
        ),
        (Prometheus, "prometheus.yml", {"port": 1, "targets_dir": "/t", "rules": "/r.yml"}),
    ],
)
def test_templates_render_into_the_state_directory(
    tmp_path: Path, broker: type[Kafka | Mosquitto | Prometheus], template: str,
    fields: dict[str, object],
) -> None:  # fmt: skip
    settings = dataclasses.replace(InfraSettings(), host="::1", state_dir=tmp_path)
    b = broker(settings)
    target = b.dir / template
    b.render(template, target, **fields)
    text = target.read_text()
    assert "${" not in text.replace("${sys:", "")
    assert "::1" in text, "the host is filled in"


def test_files_read_by_path_are_copied_unchanged(tmp_path: Path) -> None:
    kafka = Kafka(dataclasses.replace(InfraSettings(), state_dir=tmp_path))
    pom = kafka.copy("pom.xml")
    assert pom == tmp_path / "kafka" / "pom.xml"
    assert pom.read_bytes() == (TEMPLATES / "kafka" / "pom.xml").read_bytes()
    assert "${kafka.version}" in pom.read_text(), "Maven's own placeholders stay"


def test_the_state_directory_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert InfraSettings().state_dir == tmp_path / ".supernet"
    assert InfraSettings.from_env({"SUPERNET_STATE_DIR": "/x/y"}).state_dir == Path("/x/y")
