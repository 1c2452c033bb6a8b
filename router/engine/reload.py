"""Live reload of the network's decks: on SIGHUP a worker reads its network directory again
and swaps the route table under traffic.

The new table is loaded in a thread while the worker goes on routing with the old one;
``Router.swap`` then replaces table and rankings in one assignment, between two
decisions, so no message is paused for the load or routed on a mix of the two. Prices,
prefixes and effective dates may change (a reload is also how a price whose
``effective_from`` has come goes live). The set of carriers may not: the transport, the
breakers and the metrics are keyed by it, so a reload that adds or removes carriers is
refused, as is one whose decks do not load; the worker goes on with the table it has and
says why in its log and in ``supernet_network_reloads_total``.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any, Literal

import structlog

from router.core.decision import Router
from router.core.errors import RoutingError
from router.core.network import load_network
from router.engine.metrics import Metrics

log = structlog.get_logger("router.engine.reload")

Result = Literal["ok", "refused", "failed"]


async def reload_once(
    router: Router, carriers: dict[str, Any], network_dir: Path, metrics: Metrics
) -> Result:
    """Load ``network_dir`` again and swap it in; ``carriers`` (the pipeline's specs by
    id) is updated in place with the new specs."""
    try:
        table = await asyncio.to_thread(load_network, network_dir)
    except (RoutingError, OSError, ValueError) as e:
        log.error("network reload failed; the current table stays", error=str(e))
        metrics.network_reloads.labels("failed").inc()
        return "failed"
    old, new = set(router.table.carriers), set(table.carriers)
    if old != new:
        log.error(
            "network reload refused: the carriers changed (restart the worker to add or "
            "remove carriers); the current table stays",
            added=sorted(new - old)[:10],
            removed=sorted(old - new)[:10],
        )
        metrics.network_reloads.labels("refused").inc()
        return "refused"
    router.swap(table)
    carriers.update(table.carriers)
    gc.freeze()  # the new table is long-lived too (see Worker.run)
    metrics.network_reloads.labels("ok").inc()
    log.info("network reloaded", network=str(network_dir), carriers=len(table.carriers))
    return "ok"


async def reload_on(
    wanted: asyncio.Event,
    router: Router,
    carriers: dict[str, Any],
    network_dir: Path,
    metrics: Metrics,
) -> None:
    """Reload each time ``wanted`` is set (by the SIGHUP handler); runs until cancelled."""
    while True:
        await wanted.wait()
        wanted.clear()
        await reload_once(router, carriers, network_dir, metrics)
