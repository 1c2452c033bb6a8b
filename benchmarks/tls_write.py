"""What a TLS write costs the writer: client CPU per write and per MB over loopback, TLS
(the project CA's certificates, as the brokers use) against plain TCP, on uvloop and on
asyncio's own loop, for several write sizes. It answers one question of issue 12: is
TLS the wall for the engine's Kafka clients? (It is not: see benchmarks/README.md.)

The server is another process (it only reads), so that its work is not counted; the
client writes --mb megabytes per case and reports its own process CPU time.

    .venv/bin/python benchmarks/tls_write.py             # about 10 s
    .venv/bin/python benchmarks/tls_write.py --mb 200 --sizes 1024,16384
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make `router` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop
from rich.console import Console
from rich.table import Table

from router.support.credentials import CA_CERT_NAME
from router.tools.infra.credentials import ensure_server_cert

console = Console()


def serve(port: int, cert: str, key: str) -> None:
    """Read and discard whatever comes, over TLS if ``cert`` is given (another process)."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await r.read(1 << 20):
            pass
        w.close()

    async def main() -> None:
        ctx = None
        if cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
        server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def write(port: int, ca: str | None, size: int, total: int) -> float:
    """Seconds of this process's CPU to write ``total`` bytes in writes of ``size``."""
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    _, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    data = os.urandom(size)
    began, n = time.process_time(), 0
    while n < total:
        w.write(data)
        n += size
        await w.drain()
    took = time.process_time() - began
    w.close()
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=50, help="megabytes written per case")
    parser.add_argument("--sizes", default="512,4096,16384", help="write sizes in bytes")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "CERT", "KEY"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    total = args.mb * 1024 * 1024
    table = Table(title=f"client CPU to write {args.mb} MB over loopback")
    for col in ("loop", "transport", "write bytes", "µs per write", "ms per MB"):
        table.add_column(col, justify="right")
    runners: dict[str, Callable[[Coroutine[Any, Any, float]], float]] = {
        "uvloop": uvloop.run, "asyncio": asyncio.run,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = ensure_server_cert(Path(tmp), "tls-bench", "127.0.0.1")
        ca = str(Path(tmp) / CA_CERT_NAME)
        for size in sizes:
            for loop_name, run in runners.items():
                for tls in (False, True):
                    port = free_port()
                    server = subprocess.Popen(
                        [sys.executable, __file__, "--serve", str(port),
                         str(cert) if tls else "", str(key) if tls else ""],
                        stdout=subprocess.PIPE,
                    )  # fmt: skip
                    try:
                        assert server.stdout is not None
                        server.stdout.readline()  # "ready"
                        seconds = run(write(port, ca if tls else None, size, total))
                    finally:
                        server.kill()
                        server.wait()
                    writes = total / size
                    table.add_row(loop_name, "TLS" if tls else "TCP", f"{size:,}",
                                  f"{seconds / writes * 1e6:.1f}",
                                  f"{seconds * 1000 / args.mb:.2f}")  # fmt: skip
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
