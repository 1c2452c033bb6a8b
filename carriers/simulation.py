"""The simulator's own truth about each carrier: ``DIR/simulation.json``.

A router never reads this file. It holds what a router must learn from delivery reports
(the true delivery probability, per destination for aggregators) and the hidden behaviour
of each endpoint (submit latency, failure rate, report delay and loss).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

SIMULATION_FILE = "simulation.json"
SIMULATION_VERSION = 1


class DestinationTruth(msgspec.Struct, forbid_unknown_fields=True):
    """How an aggregator really does towards one country calling code."""

    delivery_probability: float
    latency_factor: float  # multiplies the carrier's report delay for this destination


class CarrierTruth(msgspec.Struct, forbid_unknown_fields=True):
    """Hidden behaviour of one carrier endpoint."""

    id: str
    seed: int  # the endpoint's own random stream, so a run is reproducible per carrier
    delivery_probability: float  # true share of accepted messages that reach the handset
    submit_latency_ms: float  # median time from submit to ack/reject
    submit_failure_rate: float  # share of submits rejected at random (code 30008)
    report_delay_ms: float  # median delay from ack to delivery report (lognormal)
    report_delay_sigma: float  # lognormal shape of the report delay
    report_loss_rate: float  # share of delivery reports never sent
    throughput_mps: float  # true cap; submits past it are throttled
    burst_s: float = 1.0  # token bucket depth, in seconds of throughput
    # by country calling code (as a string, e.g. "44"); absent means no difference
    destinations: dict[str, DestinationTruth] = {}


class SimulationFile(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    seed: int
    carriers: list[CarrierTruth]


class SimulationFileError(Exception):
    """The simulation file is missing or malformed; regenerate the network."""


_decoder = msgspec.json.Decoder(SimulationFile)
_encoder = msgspec.json.Encoder(order="deterministic")


def dump(sim: SimulationFile, directory: Path) -> Path:
    path = directory / SIMULATION_FILE
    path.write_bytes(msgspec.json.format(_encoder.encode(sim), indent=1) + b"\n")
    return path


def load(directory: Path) -> SimulationFile:
    path = directory / SIMULATION_FILE
    try:
        sim = _decoder.decode(path.read_bytes())
    except FileNotFoundError:
        raise SimulationFileError(
            f"{path}: no simulation file; generate the network with "
            f"`supernet network generate --out {directory}`"
        ) from None
    except msgspec.DecodeError as e:
        raise SimulationFileError(f"{path}: {e}") from None
    if sim.version != SIMULATION_VERSION:
        raise SimulationFileError(
            f"{path}: version {sim.version} is not supported (expected "
            f"{SIMULATION_VERSION}); regenerate the network"
        )
    return sim
