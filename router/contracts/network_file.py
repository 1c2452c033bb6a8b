"""The network description that the router loads and the simulator generates.

A network directory holds:

- ``network.json``: this module's ``NetworkFile``, everything a router may know about the
  carriers (kind, advertised latency and delivery rate, throughput cap, where its deck is);
- ``decks/<carrier id>.csv``: one rate deck per carrier, in the CSV layout that
  ``router.core`` imports;
- anything else the simulator keeps for itself (for example the carriers' true delivery
  probabilities), which a router never reads.

The same file serves the routing core (``supernet explain``, the worker) and the carriers
simulator, so the router loads exactly what the simulator runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import msgspec

NETWORK_FILE = "network.json"
FORMAT_VERSION = 1
CARRIER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

CarrierKind = Literal["direct", "aggregator"]


class CarrierSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One carrier as the router sees it."""

    id: str  # lower-case letters, digits and '-': used in MQTT topic names and metrics labels
    name: str
    kind: CarrierKind
    countries: list[str]  # ISO 3166-1 alpha-2 region codes the carrier's deck covers
    deck: str  # path of the carrier's rate deck, relative to the network directory
    latency_ms: float  # expected submit-to-delivery latency, as advertised
    delivery_rate: float  # expected share of messages delivered, as advertised (0..1)
    throughput_mps: float  # messages per second the carrier accepts before throttling


class NetworkFile(msgspec.Struct, forbid_unknown_fields=True):
    """The whole network as the router sees it."""

    version: int
    name: str
    carriers: list[CarrierSpec]
    seed: int | None = None
    currency: str = "USD"


class NetworkFileError(Exception):
    """The network description is missing or malformed; the message says where and what."""


_decoder = msgspec.json.Decoder(NetworkFile)
_encoder = msgspec.json.Encoder(order="deterministic")


def validate(network: NetworkFile, source: str = NETWORK_FILE) -> None:
    """Check what the schema cannot: ids, ranges, uniqueness. Raises NetworkFileError."""
    if network.version != FORMAT_VERSION:
        raise NetworkFileError(
            f"{source}: format version {network.version} is not supported "
            f"(this supernet reads version {FORMAT_VERSION}); regenerate the network"
        )
    seen: set[str] = set()
    for i, c in enumerate(network.carriers):
        where = f"{source}: carriers[{i}] ({c.id!r})"
        if not CARRIER_ID.match(c.id):
            raise NetworkFileError(f"{where}: id must match {CARRIER_ID.pattern}")
        if c.id in seen:
            raise NetworkFileError(f"{where}: duplicate carrier id")
        seen.add(c.id)
        if not 0.0 <= c.delivery_rate <= 1.0:
            raise NetworkFileError(f"{where}: delivery_rate {c.delivery_rate} is not in 0..1")
        if c.latency_ms < 0:
            raise NetworkFileError(f"{where}: latency_ms {c.latency_ms} is negative")
        if c.throughput_mps <= 0:
            raise NetworkFileError(f"{where}: throughput_mps {c.throughput_mps} must be > 0")
        if Path(c.deck).is_absolute() or ".." in Path(c.deck).parts:
            raise NetworkFileError(f"{where}: deck {c.deck!r} must be a path inside the directory")


def load(directory: Path) -> NetworkFile:
    """Read and validate ``directory/network.json``."""
    path = directory / NETWORK_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NetworkFileError(
            f"{path}: no network description here; create one with "
            f"`supernet network generate --out {directory}`"
        ) from None
    try:
        network = _decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise NetworkFileError(f"{path}: {e}") from None
    except msgspec.DecodeError as e:
        raise NetworkFileError(f"{path}: not valid JSON: {e}") from None
    validate(network, str(path))
    return network


def dump(network: NetworkFile, directory: Path) -> Path:
    """Write ``directory/network.json`` deterministically (same network, same bytes)."""
    validate(network)
    path = directory / NETWORK_FILE
    path.write_bytes(msgspec.json.format(_encoder.encode(network), indent=1) + b"\n")
    return path
