"""`supernet demo`: brokers, network, carriers with an outage, a fleet, a minute of load,
then a summary computed from the run's receipts, and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from router.contracts.network_file import NetworkFileError
from router.engine.kafka import KafkaError
from router.support import logs
from router.support.argtypes import positive
from router.support.infra_settings import InfraSettings
from router.support.procs import InfraError

DESCRIPTION = """\
The whole engine end to end, on this machine:

  1. the brokers (`supernet infra up`; at the end only those this run started are stopped)
  2. the network (`supernet network generate --seed S --out OUT/network`, reused if there)
  3. the busy carrier: the one the routing core picks most for the load's traffic
  4. a fleet of router workers (`supernet fleet`), scraped by Prometheus
  5. the carriers (`supernet carriers`) with a scenario: the busy carrier goes offline
     halfway through the load, for a quarter of it
  6. the load (`supernet load`'s generator) at RATE for DURATION seconds
  7. every request and receipt of the run read back from Kafka, and the summary
     computed from them: throughput, latency p50/p99, delivery rate, outcomes by code,
     failover events around the outage, cost per delivered message against the
     economics run's policies (router.tools.economics), where the metrics can be seen
  8. plots in OUT: traffic-share.png, latency.png, cost-per-delivered.png;
     the figures in OUT/summary.json, the load's report in OUT/load.json

Brokers' addresses come from the SUPERNET_* environment variables of `supernet infra`
(SUPERNET_KAFKA_PORT, SUPERNET_MQTT_PORT, SUPERNET_PROMETHEUS_PORT, SUPERNET_STATE_DIR).
Everything the demo starts is stopped at the end, also on Ctrl-C or an error."""

EPILOG = """\
examples:
  supernet demo
  supernet demo --rate 1000 --duration 30 --no-economics
  supernet demo --keep            # leave the brokers up to look at Prometheus afterwards

exit codes: 0 every request got an outcome receipt, 1 some did not, 2 a step failed"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the engine end to end with an outage: summary from receipts, and plots",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rate",
        type=positive(float),
        default=1000.0,
        metavar="R",
        help="requests per second (default 1000; 2000 outran 2 workers on a shared 2-core box)",
    )
    p.add_argument(
        "--duration",
        type=positive(float),
        default=60.0,
        metavar="S",
        help="seconds of load (default 60)",
    )
    p.add_argument(
        "--workers",
        type=positive(int),
        default=2,
        metavar="N",
        help="router workers in the fleet (default 2)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/demo"),
        metavar="DIR",
        help="where the network, logs, JSON and plots go (default out/demo)",
    )
    p.add_argument("--seed", type=int, default=1, help="network and traffic seed (default 1)")
    p.add_argument("--keep", action="store_true", help="leave the brokers this run started running")
    p.add_argument(
        "--no-economics", action="store_true", help="skip the economics baselines (quicker)"
    )
    p.add_argument(
        "--economics-count",
        type=positive(int),
        default=20_000,
        metavar="N",
        help="requests per policy in the economics run (default 20000)",
    )
    p.add_argument(
        "--outage-s",
        type=positive(float),
        metavar="S",
        help="seconds the busy carrier stays offline (default: duration / 4)",
    )
    p.add_argument(
        "--wait-s",
        type=positive(float),
        default=15.0,
        metavar="S",
        help="seconds to wait for outcomes after the load, and as much again "
        "for delivery reports (default 15)",
    )
    p.add_argument(
        "--network",
        type=Path,
        metavar="DIR",
        help="use this network directory instead of generating one",
    )
    p.add_argument(
        "--no-infra",
        action="store_true",
        help="do not start or stop brokers: use those already running",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=19400,
        metavar="PORT",
        help="worker i serves /metrics on PORT + i (0: none; default 19400)",
    )
    topics = p.add_argument_group("topics and groups (fresh ones keep a run apart)")
    topics.add_argument("--requests-topic", default="sms.requests", metavar="T")
    topics.add_argument("--receipts-topic", default="sms.receipts", metavar="T")
    topics.add_argument("--dead-letter-topic", default="sms.dead-letter", metavar="T")
    topics.add_argument(
        "--group", default="supernet-routers", metavar="G", help="the fleet's Kafka consumer group"
    )
    topics.add_argument(
        "--dlr-group",
        default="routers",
        metavar="G",
        help="the fleet's shared MQTT subscription for delivery reports",
    )
    topics.add_argument(
        "--id-prefix", metavar="P", help="request id prefix (default demo<seed>-<random>-)"
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from router.tools.demo.run import DemoConfig, DemoError, run

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough for the tables
        console = Console(width=120)
    err = Console(stderr=True, soft_wrap=True)  # an error stays one line, however long
    # The terminal shows the demo's own story; aiokafka's records go to the logs.
    logs.libraries_to(args.out / "logs" / "demo.log")
    try:
        settings = InfraSettings.from_env()
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        return 2
    config = DemoConfig(
        out=args.out,
        rate=args.rate,
        duration=args.duration,
        workers=args.workers,
        seed=args.seed,
        network=args.network,
        infra=not args.no_infra,
        keep=args.keep,
        economics=not args.no_economics,
        economics_count=args.economics_count,
        outage_s=args.outage_s,
        wait_s=args.wait_s,
        metrics_port=args.metrics_port,
        requests_topic=args.requests_topic,
        receipts_topic=args.receipts_topic,
        dead_letter_topic=args.dead_letter_topic,
        group=args.group,
        dlr_group=args.dlr_group,
        id_prefix=args.id_prefix,
        infra_settings=settings,
    )
    try:
        result = run(config, console)
    except (DemoError, InfraError, KafkaError, NetworkFileError, OSError) as e:
        err.print(f"[red]demo failed:[/] {e}")
        return 2
    for path in result.files:
        console.print(f"demo: wrote {path}")
    return 0 if result.summary.without_outcome == 0 else 1
