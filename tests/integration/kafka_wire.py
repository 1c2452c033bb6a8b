"""Kafka below the client library, for the security tests: one metadata request with
chosen connection options, and raw requests over (m)TLS to the controller port."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from router.support.credentials import KafkaAccess
from router.support.infra_settings import InfraSettings

WAIT_S = 15.0  # for what must happen: generous, never asserted

REQUEST_MS = 5000  # aiokafka's per-request timeout: a refused request never waits long

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], seconds: float = WAIT_S) -> T:
    async with asyncio.timeout(seconds):
        return await awaitable


async def metadata_over(port: int, **options: Any) -> Any:
    """One connection with these options (aiokafka's own), one metadata request."""
    conn = await bounded(create_conn("127.0.0.1", port, request_timeout_ms=REQUEST_MS, **options))
    try:
        return await bounded(conn.send(MetadataRequest([])))
    finally:
        conn.close()


def sasl(access: KafkaAccess, **change: Any) -> dict[str, Any]:
    """aiokafka connection options for ``access`` (SASL_SSL, SCRAM), with ``change``."""
    kw = access.client_kwargs()
    kw.pop("bootstrap_servers")
    return kw | change


def api_versions_request(correlation: int) -> bytes:
    """A Kafka ApiVersions v0 request, framed: what any Kafka listener answers first."""
    client = b"supernet-test"
    body = struct.pack(">hhih", 18, 0, correlation, len(client)) + client
    return struct.pack(">i", len(body)) + body


async def round_trip(port: int, request: bytes, tls: ssl.SSLContext | None) -> bytes:
    """Send ``request`` on a fresh connection (TLS with ``tls``) and return the first
    bytes of the answer (b"" if the peer closed). TLS errors propagate: with TLS 1.3 a
    refused client certificate shows only on the first read."""
    host = "127.0.0.1"
    reader, writer = await bounded(
        asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None)
    )
    try:
        writer.write(request)
        await bounded(writer.drain())
        return await bounded(reader.read(8))
    finally:
        writer.transport.abort()  # no TLS close handshake: it is not tested


def client_tls(infra: InfraSettings, cert: str | None = None) -> ssl.SSLContext:
    """Trusting the project CA; presenting ``<secrets>/<cert>.crt`` if given."""
    ctx = ssl.create_default_context(cafile=str(infra.secrets().ca_file))
    if cert is not None:
        ctx.load_cert_chain(infra.secrets_dir / f"{cert}.crt", infra.secrets_dir / f"{cert}.key")
    return ctx
