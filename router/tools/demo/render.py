"""The demo's summary as rich tables (presentation only; the figures are ``summary``'s)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table

from router.tools.demo.summary import DemoSummary, PolicyRow
from router.tools.load.report import Latency


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v:.5f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _latency(lat: Latency) -> str:
    if not lat.count:
        return "-"
    return f"p50 {_ms(lat.p50_ms)} ms  p99 {_ms(lat.p99_ms)} ms  (n={lat.count:,})"


def figures(s: DemoSummary) -> Table:
    t = Table(
        title="supernet demo: the run, from its receipts", show_header=False, title_justify="left"
    )
    t.add_column("figure", style="bold")
    t.add_column("value")
    offered = "-" if s.offered_per_second is None else f"{s.offered_per_second:,.0f}/s"
    through = "-" if s.outcomes_per_second is None else f"{s.outcomes_per_second:,.0f}/s"
    t.add_row("requests", f"{s.requests:,} (offered {offered})")
    t.add_row(
        "throughput",
        f"{through} outcomes (sent or failed), "
        f"{s.with_outcome:,} of {s.requests:,} requests answered",
    )
    t.add_row("latency request -> sent", _latency(s.latency_sent))
    t.add_row("latency request -> delivered", _latency(s.latency_delivered))
    t.add_row(
        "delivery rate",
        f"{_pct(s.delivery_rate)} of {s.routed:,} routable requests "
        f"({_pct(s.delivery_rate_all)} of all; {_pct(s.reported_delivery_rate)} of the "
        f"{s.reported:,} reports that came; {s.sent_without_report:,} sent without a report)",
    )
    t.add_row("statuses", "  ".join(f"{k} {v:,}" for k, v in s.by_status.items()))
    t.add_row(
        "cost",
        f"${s.cost_usd:,.2f} for {s.by_status.get('sent', 0):,} sent; "
        f"{_usd(s.cost_per_delivered_usd)} per delivered message",
    )
    t.add_row("on aggregators", _pct(s.aggregator_share))
    t.add_row("busiest carriers", ", ".join(f"{c} {n:,}" for c, n in s.top_carriers[:6]))
    t.add_row(
        "receipts read",
        f"{s.receipts_read:,} ({s.duplicates:,} duplicates, {s.foreign:,} of other runs left out)",
    )
    return t


def outcomes(s: DemoSummary) -> Table:
    t = Table(title="outcomes by code", title_justify="left")
    for col, justify in (
        ("status", "left"),
        ("code", "right"),
        ("requests", "right"),
        ("meaning", "left"),
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in s.outcomes:
        t.add_row(c.status, str(c.code), f"{c.count:,}", c.meaning)
    if not s.outcomes:
        t.add_row("-", "-", "0", "no failed or undelivered receipt")
    return t


def failovers(s: DemoSummary) -> Table:
    f = s.failovers
    t = Table(
        title=f"failover events: {f.attempts:,} failed attempts on {f.messages:,} requests",
        title_justify="left",
        show_header=False,
    )
    t.add_column("figure", style="bold")
    t.add_column("value")
    if s.outage is not None:
        o = s.outage
        end = "the end" if o.end_s is None else f"{o.end_s:.1f} s"
        t.add_row(
            "outage",
            f"{o.carrier} offline from {o.start_s:.1f} s to {end} "
            "(seconds after the first request)",
        )
        after = "" if o.share_after is None else f", after {_pct(o.share_after)}"
        t.add_row(
            f"{o.carrier}'s share of sent",
            f"before {_pct(o.share_before)}, during {_pct(o.share_during)}{after}",
        )
        t.add_row(
            "traffic taken over by",
            ", ".join(f"{c} (+{100 * r:.1f} pts)" for c, r in o.taken_over_by) or "-",
        )
        t.add_row(
            "failed attempts by outcome time",
            f"before {f.before_outage:,}, during {f.during_outage:,}, "
            f"after {f.after_outage:,}; on {o.carrier}: {f.from_outage_carrier:,}",
        )
    for c in f.by_code:
        t.add_row(f"  code {c.code}", f"{c.count:,}  {c.meaning}")
    for m in f.moves[:8]:
        t.add_row(f"  {m.from_carrier} -> {m.to_carrier}", f"{m.count:,}")
    return t


def policies(rows: Sequence[PolicyRow], note: str) -> Table:
    t = Table(
        title="cost per delivered message by policy",
        title_justify="left",
        caption=note,
        caption_justify="left",
    )
    for col in (
        "policy",
        "source",
        "requests",
        "delivery rate",
        "cost / delivered",
        "failovers",
        "on aggregators",
    ):
        t.add_column(col, justify="left" if col in ("policy", "source") else "right")
    for r in rows:
        t.add_row(
            r.name,
            r.source,
            f"{r.requests:,}",
            _pct(r.delivery_rate),
            _usd(r.cost_per_delivered_usd),
            f"{r.failovers:,}",
            _pct(r.aggregator_share),
        )
    return t


def render(s: DemoSummary, economics_note: str) -> RenderableType:
    return Group(figures(s), outcomes(s), failovers(s), policies(s.policies, economics_note))
