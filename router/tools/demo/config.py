"""What a demo run is asked to do (``DemoConfig``), and how a step of it fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from router.support.infra_settings import InfraSettings

BUSY_SAMPLE = 20_000  # requests of the load's traffic that pick the busy carrier
FLEET_START_S = 120.0
CARRIERS_START_S = 120.0
FLEET_STOP_S = 60.0
CARRIERS_STOP_S = 30.0
LEAD_S = 1.0  # from the carriers being ready to the first request
CARRIERS_METRICS_PORT = 19480  # the carriers' ledger as Prometheus metrics


class DemoError(Exception):
    """A step of the demo failed; the message says which and where its log is."""


@dataclass(frozen=True, slots=True)
class DemoConfig:
    out: Path = Path("out/demo")
    rate: float = 1000.0
    duration: float = 60.0
    workers: int = 2
    seed: int = 1
    network: Path | None = None  # None: generate (or reuse) OUT/network with ``seed``
    infra: bool = True  # bring the brokers up, and down again if this run started them
    keep: bool = False  # leave the brokers this run started running
    economics: bool = True
    economics_count: int = 20_000
    outage_s: float | None = None  # None: a quarter of the duration
    wait_s: float = 15.0
    metrics_port: int = 19400  # 0: no /metrics
    requests_topic: str = "sms.requests"
    receipts_topic: str = "sms.receipts"
    dead_letter_topic: str = "sms.dead-letter"
    group: str = "supernet-routers"
    dlr_group: str = "routers"
    id_prefix: str | None = None  # None: demo<seed>-<random>-
    infra_settings: InfraSettings = field(default_factory=InfraSettings.from_env)

    @property
    def outage_duration_s(self) -> float:
        return self.outage_s if self.outage_s is not None else self.duration / 4
