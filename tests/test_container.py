"""The container image definition (``deploy/container/Containerfile``), checked offline
(no Docker daemon here builds it): two stages, the final one unprivileged, the package's
own entry point, and only files that exist copied in."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments and blank lines dropped."""
    out = []
    for line in CONTAINERFILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


def test_the_image_is_built_in_two_stages_and_runs_unprivileged() -> None:
    build, final = _stages()
    assert build[0][1].endswith(" AS build")
    assert ("RUN", "pip wheel --no-cache-dir --wheel-dir /wheels .") in build
    assert any(i == "COPY" and a.startswith("--from=build ") for i, a in final)
    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage sets a user"
    assert users[-1] not in ("0", "root")
    assert re.fullmatch(r"\d+", users[-1]), "a numeric uid (runAsNonRoot can check it)"
    assert ("ENTRYPOINT", '["supernet"]') in final
    # The Python the image runs is one the project supports.
    version = re.search(r"python:(\d+)\.(\d+)", final[0][1])
    assert version is not None
    assert (int(version[1]), int(version[2])) >= (3, 11)


def test_only_files_that_exist_are_copied_and_no_dev_extras_installed() -> None:
    build, final = _stages()
    for ins, args in build:
        if ins == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
    installs = [a for i, a in final if i == "RUN" and "pip install" in a]
    assert installs
    assert all("[dev]" not in a and "-e " not in a for a in installs)


def test_the_exposed_port_is_the_workers_metrics_port() -> None:
    from router.engine.settings import WorkerSettings

    (_, final) = _stages()
    assert ("EXPOSE", str(WorkerSettings().metrics_port)) in final
