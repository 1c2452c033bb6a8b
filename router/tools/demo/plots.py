"""The demo's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from router.tools.demo.summary import LatencySeries, OutageFigures, PolicyRow, ShareSeries

TRAFFIC_PNG = "traffic-share.png"
LATENCY_PNG = "latency.png"
COST_PNG = "cost-per-delivered.png"


def _mark_outage(ax: Axes, outage: OutageFigures | None, right: float, span: bool) -> None:
    if outage is None:
        return
    end = outage.end_s if outage.end_s is not None else right
    label = f"{outage.carrier} offline"
    if span:
        ax.axvspan(outage.start_s, end, color="red", alpha=0.10, label=label)
    else:
        ax.axvline(end, color="red", linewidth=1.5, linestyle="--")
    ax.axvline(
        outage.start_s, color="red", linewidth=1.5, linestyle="--", label=None if span else label
    )


def traffic_share(
    series: ShareSeries, outage: OutageFigures | None, until_s: float, path: Path
) -> Path:
    """Stacked area: each top carrier's share of the messages sent in each second, up to
    ``until_s`` (the end of the load: later bins hold only a few stragglers)."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    keep = [i for i, t in enumerate(series.seconds) if t < until_s]
    seconds = [series.seconds[i] for i in keep]
    totals = [sum(series.counts[c][i] for c in series.carriers) for i in keep]
    shares = [
        [100.0 * series.counts[c][i] / t if t else 0.0 for i, t in zip(keep, totals, strict=True)]
        for c in series.carriers
    ]
    if seconds:  # repeat the last bin so that step="post" draws it too
        step = seconds[1] - seconds[0] if len(seconds) > 1 else 1.0
        seconds.append(seconds[-1] + step)
        for row in shares:
            row.append(row[-1])
        ax.stackplot(seconds, shares, labels=series.carriers, step="post", alpha=0.85)
        ax.set_xlim(seconds[0], seconds[-1])
    _mark_outage(ax, outage, seconds[-1] if seconds else 0.0, span=False)
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("share of messages sent (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Traffic share per carrier around the outage (sent receipts, 1 s bins)")
    if series.seconds:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(series: LatencySeries, outage: OutageFigures | None, path: Path) -> Path:
    """p50 and p99 request -> sent latency of the requests created in each second."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(series.seconds, series.p50_ms, label="p50", linewidth=1.5)
    ax.plot(series.seconds, series.p99_ms, label="p99", linewidth=1.5)
    _mark_outage(ax, outage, series.seconds[-1] if series.seconds else 0.0, span=True)
    ax.set_xlabel("seconds since the first request (by creation time)")
    ax.set_ylabel("request -> sent (ms)")
    if series.p99_ms and max(series.p99_ms) > 20 * max(1.0, min(series.p50_ms)):
        ax.set_yscale("log")
    ax.set_title("Latency over time, request -> sent (1 s bins)")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_by_policy(rows: Sequence[PolicyRow], path: Path) -> Path:
    """Bars: cost per delivered message of each policy, the live run highlighted."""
    shown = [r for r in rows if r.cost_per_delivered_usd is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = [r.name for r in shown]
    values = [1000.0 * (r.cost_per_delivered_usd or 0.0) for r in shown]
    colors = ["tab:orange" if r.source == "live" else "tab:blue" for r in shown]
    bars = ax.bar(names, values, color=colors)
    for bar, r in zip(bars, shown, strict=True):
        rate = "" if r.delivery_rate is None else f"\n{100 * r.delivery_rate:.1f}% delivered"
        ax.annotate(
            f"${bar.get_height():.2f}{rate}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize="small",
        )
    ax.set_ylabel("USD per 1,000 delivered messages")
    ax.set_title("Cost per delivered message by policy (blue: economics run, orange: live)")
    ax.margins(y=0.2)
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
