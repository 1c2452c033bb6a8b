"""A worker's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``, on
its metrics port, served from a thread (as prometheus_client's own server does) so that
they answer while the event loop is busy, and tell when it is stuck.

- ``/healthz`` (alive): 200 while the event loop turns: the worker stamps a heartbeat
  every ``HEARTBEAT_S``; a heartbeat older than ``STALE_S`` (a loop stuck in a call, a
  deadlock) is 503. What a liveness probe restarts on.
- ``/readyz`` (ready): 200 when the worker has request partitions assigned, both broker
  connections are up and it is not draining; else 503. What a readiness probe or a
  rollout waits for.

Both answer a small JSON object with the reasons (``{"ok": false, "why": [...]}``).
Any other path serves the metrics, as ``prometheus_client.start_http_server`` does.

Hand-written over ``wsgiref`` rather than a web framework: three fixed paths, no
dependency, and the metrics come from prometheus_client's own WSGI app.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

HEARTBEAT_S = 1.0
STALE_S = 10.0

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Probes:
    """What the probes report: set on the event loop's thread, read on the server's."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.heartbeat = clock()
        self.assigned = 0  # request partitions this worker owns
        self.connected = {"kafka": False, "mqtt": False}
        self.draining = False

    def beat(self) -> None:
        self.heartbeat = self.clock()

    def alive(self) -> list[str]:
        """Why the worker is not alive (empty: it is)."""
        age = self.clock() - self.heartbeat
        return [f"event loop silent for {age:.1f} s"] if age > STALE_S else []

    def ready(self) -> list[str]:
        """Why the worker is not ready (empty: it is)."""
        why = self.alive()
        if self.draining:
            why.append("draining")
        why += [f"{broker} not connected" for broker, up in self.connected.items() if not up]
        if not self.assigned:
            why.append("no request partitions assigned")
        return why


def app(probes: Probes, registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        why = probes.alive() if path == "/healthz" else probes.ready()
        body = json.dumps({"ok": not why, "why": why}).encode()
        start_response(
            "200 OK" if not why else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return serve


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr (a scrape every few seconds)."""


def serve(host: str, port: int, probes: Probes, registry: CollectorRegistry) -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from a daemon
    thread; raises OSError when the port cannot be bound."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("Server", (_Server,), {"address_family": family})
    server: WSGIServer = make_server(
        host, port, app(probes, registry), server_class, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
