"""`supernet explain NUMBER`: the ranked routes for a destination, and why.

Loads a network directory, makes one routing decision exactly as a worker would (fresh
health: advertised figures; empty throttles), and shows every carrier that reaches the
number with its price, expected latency and reliability, score and state, then the
choice and the reason. Exit codes: 0 routed, 1 not routable (no route, none within
max_price, none available), 2 bad input (invalid number or body, unreadable network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from router.contracts.codes import Code
from router.core.decision import Decision, Router
from router.core.e164 import normalise
from router.core.network import example_network
from router.core.segments import count
from router.core.table import Entry, RouteTable
from router.core.types import CLASSES

GENERATED_NETWORK = Path(".supernet/network")
INPUT_CODES = frozenset({Code.INVALID_DESTINATION, Code.EMPTY_BODY, Code.BODY_TOO_LONG})


def default_network() -> Path:
    if (GENERATED_NETWORK / "network.json").exists():
        return GENERATED_NETWORK
    return example_network()


def candidates(router: Router, entry: Entry, cls: int, segments: int) -> list[dict[str, Any]]:
    """Every carrier reaching the entry, ranked, with its state (blocked ones included)."""
    health, table = router.health, router.table
    rows = []
    for r in router.ranked(entry, cls):  # the policy's order, as decide() will see it
        c = table.carriers[r.carrier]
        rows.append(
            {
                "carrier": r.carrier,
                "name": c.name,
                "kind": r.kind,
                "prefix": r.prefix,
                "price_per_segment": r.price,
                "price": round(r.price * segments, 6),
                "latency_s": r.latency_s,
                "reliability": r.reliability,
                "score": round(r.score, 6),
                "breaker": health.breaker(r.carrier).value,
                "tokens": round(router.throttle.tokens(r.carrier, r.interval, r.tau, 0.0), 1),
                "throughput_mps": c.throughput_mps,
            }
        )
    return rows


def explain(
    table: RouteTable, number: str, cls: int, body: str, max_price: float | None
) -> dict[str, Any]:
    router = Router(table)
    digits = normalise(number)
    entry = table.lookup(digits) if digits else None
    sg = count(body)
    rows = candidates(router, entry, cls, sg.segments) if entry is not None and not sg.code else []
    decision: Decision = router.decide(number, body, cls, max_price, now=0.0)
    if decision.code in INPUT_CODES:
        rows = []
    for row in rows:
        row["chosen"] = row["carrier"] == decision.carrier
        row["within_max_price"] = max_price is None or row["price"] <= max_price
    return {
        "number": number,
        "e164": f"+{digits}" if digits else None,
        "country": entry.country if entry is not None else None,
        "matched_prefix": entry.prefix if entry is not None else None,
        "class": CLASSES[cls],
        "encoding": decision.encoding,
        "segments": decision.segments,
        "max_price": max_price,
        "code": decision.code,
        "carrier": decision.carrier,
        "price": round(decision.price, 6),
        "currency": "USD",
        "reason": decision.reason,
        "fallbacks": [r.carrier for r in decision.fallbacks()],
        "candidates": rows,
    }


def render(out: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]{out['e164'] or out['number']}[/]  country {out['country'] or '?'}  "
        f"prefix {out['matched_prefix'] or '-'}  class [bold]{out['class']}[/]  "
        f"{out['encoding']} x {out['segments']} segment(s)"
        + (f"  max_price {out['max_price']} USD" if out["max_price"] is not None else "")
    )
    if out["candidates"]:
        t = Table(title="candidates, best first (lower score is better)")
        for col in ("#", "carrier", "kind", "prefix", "USD/msg", "latency s", "reliability",
                    "score", "breaker", "tokens"):  # fmt: skip
            t.add_column(col, justify="right" if col not in ("carrier", "kind") else "left")
        for i, r in enumerate(out["candidates"], 1):
            style = "bold green" if r["chosen"] else ("dim" if not r["within_max_price"] else "")
            price = f"{r['price']:.5f}" + ("" if r["within_max_price"] else " > max")
            t.add_row(
                str(i), r["carrier"], r["kind"], r["prefix"], price, f"{r['latency_s']:.2f}",
                f"{r['reliability']:.1%}", f"{r['score']:.5f}", r["breaker"],
                f"{r['tokens']:g}/{r['throughput_mps']:g}", style=style,
            )  # fmt: skip
        console.print(t)
    if out["code"] == 0:
        console.print(
            f"[bold green]route to {out['carrier']}[/] at {out['price']:.5f} USD: {out['reason']}"
        )
        if out["fallbacks"]:
            console.print("fallbacks, in order: " + ", ".join(out["fallbacks"]))
    else:
        console.print(f"[bold red]error {out['code']}[/]: {out['reason']}")
