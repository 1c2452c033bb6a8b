"""Prometheus file discovery: a process that serves ``/metrics`` announces itself by a file."""

from __future__ import annotations

import json
from pathlib import Path


def write_target(directory: Path, name: str, host: str, port: int, labels: dict[str, str]) -> Path:
    """Drop a Prometheus file-discovery target for a ``/metrics`` endpoint into
    ``directory`` (the local Prometheus reads ``<state>/prometheus/targets/*.json``);
    the caller removes the file when it stops serving."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    target = directory / f"{name}.json"
    target.write_text(json.dumps([{"targets": [address], "labels": labels}]))
    return target
