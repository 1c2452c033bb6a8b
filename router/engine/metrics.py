"""The worker's Prometheus metrics, declared once against a registry that is passed in.

Names follow the Prometheus conventions: ``supernet_`` prefix, base units, ``_total`` on
counters only. Labels are bounded: carrier ids come from the network file, codes and
statuses from fixed lists; never a message id or a phone number.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

BREAKER_VALUES = {"closed": 0, "half_open": 1, "probing": 1, "open": 2}

FAST_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2)
SUBMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.consumed = Counter(
            "supernet_requests_consumed_total",
            "Send requests taken from the requests topic.",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "supernet_dead_lettered_total",
            "Undecodable requests written to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.routed = Counter(
            "supernet_routed_total",
            "Submits sent to carriers (every attempt), by carrier and kind.",
            ["carrier", "kind"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "supernet_decision_seconds",
            "Routing decision time per message (batch average, one observation per batch).",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.submit_seconds = Histogram(
            "supernet_submit_seconds",
            "Time from submit to the carrier's result.",
            buckets=SUBMIT_BUCKETS,
            registry=registry,
        )
        self.intake_delay_seconds = Histogram(
            "supernet_intake_delay_seconds",
            "Time from a request's Kafka timestamp to the worker taking it (the oldest "
            "record of each fetched partition batch: one observation per batch).",
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        self.kafka_ack_seconds = Histogram(
            "supernet_kafka_ack_seconds",
            "Time from handing a batch of attempts or receipts to the Kafka producer to its "
            "acknowledgement (one observation per batch).",
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        self.receipts = Counter(
            "supernet_receipts_total",
            "Receipts acknowledged by Kafka, by status and error code ('' when none).",
            ["status", "code"],
            registry=registry,
        )
        self.failovers = Counter(
            "supernet_failovers_total",
            "Attempts that moved a message to its next carrier, by reason.",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "supernet_in_flight",
            "Requests taken in whose outcome is not yet durable.",
            registry=registry,
        )
        self.paused_partitions = Gauge(
            "supernet_paused_partitions",
            "Request partitions paused by backpressure.",
            registry=registry,
        )
        self.breaker_state = Gauge(
            "supernet_breaker_state",
            "Circuit breaker per carrier: 0 closed, 1 half-open, 2 open.",
            ["carrier"],
            registry=registry,
        )
        self.cost_usd = Counter(
            "supernet_cost_usd_total",
            "Price of messages accepted by carriers, in USD, by route kind.",
            ["kind"],
            registry=registry,
        )
        self.delivery_reports = Counter(
            "supernet_delivery_reports_total",
            "Delivery reports received from carriers, by status.",
            ["status"],
            registry=registry,
        )
        self.held = Gauge(
            "supernet_held",
            "Requests waiting for a carrier that can take them (intake paused meanwhile).",
            registry=registry,
        )
        self.internal_errors = Counter(
            "supernet_internal_errors_total",
            "Unexpected errors met handling one message or report (the message is "
            "dead-lettered with reason 'internal'; the worker goes on).",
            registry=registry,
        )
        self.duplicate_requests = Counter(
            "supernet_duplicate_requests_total",
            "Requests repeating a recent id, answered without a new submit, by the "
            "original's state (sent, failed, in_flight).",
            ["outcome"],
            registry=registry,
        )
        self.network_reloads = Counter(
            "supernet_network_reloads_total",
            "Network reloads asked by SIGHUP, by result (ok, refused, failed).",
            ["result"],
            registry=registry,
        )
        self.resumed = Counter(
            "supernet_resumed_total",
            "Re-read requests resubmitted to the carrier of their last logged attempt.",
            registry=registry,
        )
        self.resubmits = Counter(
            "supernet_resubmits_total",
            "Submits asked again of the same carrier after no answer in time.",
            registry=registry,
        )
        self.attempts_restored = Counter(
            "supernet_attempts_restored_total",
            "Attempt records read back from the attempts log on partition assignment.",
            registry=registry,
        )
        self.reports_resent = Counter(
            "supernet_delivery_reports_resent_total",
            "Delivery reports received that a carrier had published before (unacknowledged).",
            registry=registry,
        )
        self.report_acks = Counter(
            "supernet_report_acks_total",
            "Delivery reports acknowledged to carriers (their receipts durable).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "supernet_consumer_lag",
            "Requests in Kafka beyond the last one this worker took, per assigned partition "
            "(from the high watermarks of its own fetches).",
            ["partition"],
            registry=registry,
        )
        self.broker_connected = Gauge(
            "supernet_broker_connected",
            "1 while the worker's connection to the broker works (kafka, mqtt), else 0.",
            ["broker"],
            registry=registry,
        )
        self.worker_restarts = Gauge(
            "supernet_worker_restarts",
            "Times the fleet restarted this worker's slot before this process started.",
            registry=registry,
        )
        self.commits = Counter(
            "supernet_offset_commits_total",
            "Offset commits to Kafka.",
            registry=registry,
        )
        self.interconnect_refused = Counter(
            "supernet_interconnect_refused_total",
            "Carrier traffic dropped, by reason: malformed, foreign (for a carrier its sender "
            "does not host), forged (a report no router signed for that process), stale (past "
            "the report horizon), repeat (a report already written: acknowledged again), "
            "pending (a repeat of a report still being written).",
            ["reason"],
            registry=registry,
        )

    def child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoised: ``labels()`` takes a lock and builds a
        key on every call, which the per-message paths cannot afford."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c
