"""The chaos benchmark's table: one row per scenario, its figures against their targets
(PASS or SHORT), and the hostile kinds that did not end as expected."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

Check = Callable[[str, Any, argparse.Namespace], bool | None]  # None: no target there


KILLS = ("worker-kill", "kafka-node-kill")  # outcomes must keep flowing through these


def _zero(v: Any) -> bool:
    return bool(v == 0)


COLUMNS: tuple[tuple[str, str, str, Check], ...] = (
    # header, figure, target text, check
    ("produced", "produced", "", lambda n, v, a: None),
    ("outcome", "with_outcome", "", lambda n, v, a: None),
    ("lost", "lost", "0", lambda n, v, a: _zero(v)),
    ("2+ carriers", "two_carriers", "0", lambda n, v, a: None if v is None else _zero(v)),
    ("lost reports", "lost_reports", "0", lambda n, v, a: None if v is None else _zero(v)),
    ("dup receipts", "duplicate_receipts", "", lambda n, v, a: None),
    ("restarts", "restarts", "", lambda n, v, a: None),
    ("deaths", "deaths", "0 (hostile)", lambda n, v, a: _zero(v) if n == "hostile" else None),
    ("zero-out s", "zero_outcome_s", "<=10% (kill)",
     lambda n, v, a: v <= 0.1 * a.duration if n in KILLS else None),
    ("recovery s", "recovery_s", "", lambda n, v, a: None),
    ("3000x/1k", "permanent_per_1k", "", lambda n, v, a: None),
    ("hostile bad", "hostile_wrong", "0", lambda n, v, a: None if v is None else _zero(v)),
    ("repeats twice", "repeats_twice", "0", lambda n, v, a: None if v is None else _zero(v)),
)  # fmt: skip


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple | list):
        return ">".join("-" if x is None else f"{x:.1f}" for x in v) if any(
            x is not None for x in v) else "-"  # fmt: skip
    if isinstance(v, dict):
        return "/".join(str(v[k]) for k in sorted(v)) if v else "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def verdicts(result: dict[str, Any], args: argparse.Namespace) -> dict[str, bool]:
    fig = result.get("figures") or {}
    out: dict[str, bool] = {}
    for header, key, _, check in COLUMNS:
        ok = check(result["scenario"], fig.get(key), args) if key in fig else None
        if ok is not None:
            out[header] = ok
    return out


def render(results: Sequence[dict[str, Any]], args: argparse.Namespace) -> Table:
    t = Table(
        title=f"chaos: {args.duration:g} s per scenario at {args.rate:g} requests/s "
        f"({args.workers} workers); 3000x: failed 30001/30008/39001 per 1,000 requests "
        "produced before the fault > after recovery"
    )
    t.add_column("scenario", no_wrap=True)
    for header, *_ in COLUMNS:
        t.add_column(header, justify="right")
    t.add_row("target", *(target for _, _, target, _ in COLUMNS), style="dim")
    for r in results:
        if "error" in r:
            t.add_row(r["scenario"], "[red]error[/] (below)")
            continue
        fig, marks = r["figures"], verdicts(r, args)
        cells = []
        for header, key, _, _ in COLUMNS:
            cell = _cell(fig.get(key))
            if header in marks:
                cell += " [green]PASS[/]" if marks[header] else " [red]SHORT[/]"
            cells.append(cell)
        t.add_row(r["scenario"], *cells)
    return t


def render_hostile(result: dict[str, Any]) -> Table | str | None:
    kinds: dict[str, dict[str, Any]] = result.get("hostile") or {}
    bad = {k: v for k, v in kinds.items() if v["wrong"] or v["reason_wrong"] or v["altered"]}
    records = sum(v["records"] for v in kinds.values())
    title = (f"hostile: {records:,} records of {len(kinds)} kinds; "
             f"{len(bad)} kinds not as expected")  # fmt: skip
    if not kinds or not bad:
        return title if kinds else None
    t = Table(title=title)
    for col in ("kind", "expected", "records", "wrong", "got instead", "other reason", "altered"):
        t.add_column(col, justify="left" if col in ("kind", "expected", "got instead") else "right")
    for k, v in bad.items():
        got = ", ".join(f"{label} x{n}" for label, n in Counter(v["got"]).most_common(3))
        t.add_row(k, v["expected"], str(v["records"]), str(v["wrong"]), got,
                  str(v["reason_wrong"]), str(v["altered"]))  # fmt: skip
    return t
