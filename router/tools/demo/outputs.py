"""What a demo run leaves in its output directory: the plots and ``summary.json``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from router.contracts import wire
from router.tools.demo import plots
from router.tools.demo.config import DemoConfig
from router.tools.demo.summary import DemoSummary, collate, latency_series, share_series


def write_outputs(
    config: DemoConfig,
    summary: DemoSummary,
    created: dict[str, int],
    receipts: list[wire.Receipt],
    note: str,
    run_info: dict[str, Any],
) -> list[Path]:
    out = config.out
    origin = summary.first_created_ms or 0
    collated = collate(created, receipts)
    files = [
        plots.traffic_share(
            share_series(collated, origin),
            summary.outage,
            ((summary.last_created_ms or origin) - origin) / 1000.0 + 1.0,
            out / plots.TRAFFIC_PNG,
        ),
        plots.latency(latency_series(collated, origin), summary.outage, out / plots.LATENCY_PNG),
        plots.cost_by_policy(summary.policies, out / plots.COST_PNG),
    ]
    settings = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in dataclasses.asdict(config).items()
        if k != "infra_settings"
    }
    document = {
        "run": {**run_info, "config": settings, "bootstrap": config.infra_settings.kafka_bootstrap},
        "summary": summary.to_dict(),
        "economics_note": note,
        "plots": [str(f) for f in files],
    }
    path = out / "summary.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    return [*files, path]
