"""`supernet explain NUMBER`: the ranked routes for a destination, and why.

Exit codes: 0 routed, 1 not routable (no route, none within max_price, none available),
2 bad input (invalid number or body, unreadable network).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from rich.console import Console

from router.core.errors import RoutingError
from router.core.network import load_network
from router.core.types import CLASS_INDEX, CLASSES
from router.tools.explain import GENERATED_NETWORK, INPUT_CODES, default_network, explain, render

EXAMPLES = """\
examples:
  supernet explain +447700900123
  supernet explain +447700900123 --class marketing --body "Spring sale: 20% off today"
  supernet explain +4915112345678 --max-price 0.05 --json
  supernet explain +14155550123 --network .supernet/network

exit codes: 0 routed, 1 no route (none at all, none within --max-price, none available),
2 invalid input (the number or body is refused with its error code, or a bad network)
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "explain",
        help="show the ranked routes for a destination and why the best one wins",
        description=(
            "Show every carrier that can reach NUMBER: its price for this message, "
            "expected latency and delivery rate, policy score, breaker and throttle "
            "state; then the choice and the reason. Routing is never a black box."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("number", metavar="NUMBER", help="destination in E.164, e.g. +447700900123")
    p.add_argument(
        "--class",
        dest="cls",
        choices=CLASSES,
        default="transactional",
        help="message class, which sets the policy weights (default: transactional)",
    )
    p.add_argument(
        "--body",
        default="Your verification code is 123456",
        help="message text: sets encoding and segments, hence the price (default: an OTP)",
    )
    p.add_argument("--max-price", type=float, help="cap in USD for the whole message")
    p.add_argument(
        "--network",
        type=Path,
        help=f"network directory (default: {GENERATED_NETWORK} if generated, "
        "else the example network shipped with supernet)",
    )
    p.add_argument(
        "--as-of",
        type=dt.date.fromisoformat,
        help="date whose deck prices apply, YYYY-MM-DD (default: today)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    console.width = max(console.width, 120)
    err = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
    if args.max_price is not None and args.max_price < 0:
        err.print("[red]--max-price must be >= 0[/]")
        return 2
    directory = args.network or default_network()
    try:
        table = load_network(directory, args.as_of)
    except RoutingError as e:
        err.print(f"[red]cannot load the network:[/] {e}")
        return 2
    out = explain(table, args.number, CLASS_INDEX[args.cls], args.body, args.max_price)
    out["network"] = str(directory)
    if args.json:
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    else:
        render(out, console)
    if out["code"] == 0:
        return 0
    return 2 if out["code"] in INPUT_CODES else 1
