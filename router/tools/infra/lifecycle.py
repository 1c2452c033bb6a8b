"""Start, stop, inspect and exercise the local brokers (what `supernet infra` runs)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from router.support.infra_settings import KAFKA_NODE_COUNTS, InfraSettings
from router.support.procs import InfraError, port_open, wait_for
from router.tools.infra.brokers import BROKERS, Broker, Kafka

console = Console(stderr=True, highlight=False)


def brokers(settings: InfraSettings, names: Iterable[str]) -> list[Broker]:
    """The brokers ``names`` stand for: ``kafka`` is every node of the cluster."""
    out: list[Broker] = []
    for name in names:
        if name == "kafka":
            out += [Kafka(settings, n) for n in range(1, settings.kafka_nodes + 1)]
        else:
            out.append(BROKERS[name](settings))
    return out


def _with_running_nodes(settings: InfraSettings, selected: list[Broker]) -> list[Broker]:
    """``selected``, plus Kafka nodes a cluster run left running beyond ``kafka_nodes``
    (so that `down` and `status` without --kafka-nodes 3 still see nodes 2 and 3)."""
    if not any(isinstance(b, Kafka) for b in selected):
        return selected
    extra: list[Broker] = []
    for n in range(settings.kafka_nodes + 1, max(KAFKA_NODE_COUNTS) + 1):
        node = Kafka(settings, n)
        if node.proc.pid() is not None:
            extra.append(node)
    last = max(i for i, b in enumerate(selected) if isinstance(b, Kafka))
    return [*selected[: last + 1], *extra, *selected[last + 1 :]]


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def up(settings: InfraSettings, names: Iterable[str]) -> None:
    """Start what is not running, then wait until every broker answers. Idempotent."""
    selected = brokers(settings, names)
    starting: list[Broker] = []
    for broker in selected:
        if broker.proc.pid() is not None:
            console.print(f"{broker.name}: already running (pid {broker.proc.pid()})")
            continue
        ports = [broker.port]
        if isinstance(broker, Kafka):
            ports.append(broker.controller_port)
        for port in ports:
            if port_open(settings.host, port):
                raise InfraError(
                    f"{broker.name}: {settings.host}:{port} is already in use by a process that "
                    "supernet did not start; stop it or choose another port "
                    f"(see `supernet infra up --help`)"
                )
        console.print(f"{broker.name}: preparing in {broker.dir}")
        broker.prepare()
        pid = broker.proc.start(broker.argv(), broker.log_file)
        console.print(f"{broker.name}: started (pid {pid})")
        starting.append(broker)
    for broker in selected:

        def answered(b: Broker = broker) -> bool:
            return b.proc.pid() is None or b.ready()

        if not wait_for(answered, broker.start_timeout, interval=0.25):
            broker.proc.stop(broker.stop_timeout)
            raise InfraError(
                f"{broker.name}: did not answer within {broker.start_timeout:.0f}s; "
                f"log {broker.log_file}:\n{_log_tail(broker.log_file)}"
            )
        if broker.proc.pid() is None:
            raise InfraError(
                f"{broker.name}: exited during start-up; log {broker.log_file}:\n"
                f"{_log_tail(broker.log_file)}"
            )
        broker.after_ready()
        console.print(f"{broker.name}: ready at {broker.address}")


def down(settings: InfraSettings, names: Iterable[str]) -> None:
    """Stop what `up` started (by pid file), in reverse order; nothing else."""
    for broker in reversed(_with_running_nodes(settings, brokers(settings, names))):
        pid = broker.proc.pid()
        if broker.proc.stop(broker.stop_timeout):
            console.print(f"{broker.name}: stopped (pid {pid})")
        else:
            console.print(f"{broker.name}: not running")


def status(settings: InfraSettings, names: Iterable[str]) -> bool:
    """Print what runs where; True if every selected broker runs and answers."""
    table = Table(title=f"supernet infrastructure ({settings.state_dir})")
    for column in ("broker", "state", "pid", "address", "log"):
        table.add_column(column)
    all_up = True
    for broker in _with_running_nodes(settings, brokers(settings, names)):
        pid = broker.proc.pid()
        if pid is None:
            state = (
                "port taken by another process"
                if port_open(settings.host, broker.port)
                else "stopped"
            )
            all_up = False
        elif broker.ready():
            state = "[green]running[/green]"
        else:
            state = "[yellow]starting or not answering[/yellow]"
            all_up = False
        table.add_row(broker.name, state, str(pid or "-"), broker.address, str(broker.log_file))
    Console(highlight=False).print(table)
    return all_up


def roundtrip(settings: InfraSettings, count: int) -> int:
    """Send ``count`` messages through Kafka and through Mosquitto; print what came back."""
    import uvloop

    from router.tools.infra.roundtrip import round_trips

    table = Table(title=f"round trip of {count} messages through each broker")
    for column in ("broker", "sent", "received", "seconds", "messages/s"):
        table.add_column(column, justify="right")
    trips = uvloop.run(round_trips(settings, count))
    for trip in trips:
        rate = trip.received / trip.seconds if trip.seconds else 0.0
        table.add_row(
            trip.broker, str(trip.sent), str(trip.received), f"{trip.seconds:.2f}", f"{rate:,.0f}"
        )
    Console(highlight=False).print(table)
    return 0 if all(t.received == t.sent for t in trips) else 1
