"""What the whole-engine benchmarks (e2e.py, chaos.py) share: child processes known by
pid and stopped by pid (``router.support.procs``), the project root, the `supernet`
command line, the seed-1 network, the flags a command offers today, the project's brokers
on a benchmark's own ports, the MQTT identities of the processes a benchmark starts, the
Kafka users and grants of its topics, and a reader that follows Kafka topics from their
beginning.

Kafka, with security on: the benchmark itself is the operator (``kafka_admin``: creating
topics, reading them back, watching groups); the processes it measures run as their real
users (workers and the passthrough as ``fleet``, the load generator as ``producer`` and
``receipts``), on topics a benchmark grants them (``grant``) and revokes at the end.

Run as scripts, the benchmarks put the project root on ``sys.path`` first, so that
``benchmarks._harness`` imports the same way from a script and from the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from carriers import generator
from router.engine import kafka
from router.support.credentials import KafkaAccess, MqttAccess
from router.support.infra_settings import InfraSettings
from router.support.procs import Child, ChildExited, ready_or_exited
from router.tools.infra import credentials, kafka_acls
from router.tools.infra.kafka_acls import Pipeline

# Wide enough for the e2e table when the output goes to a file (rich falls back to 80).
console = Console(width=None if sys.stdout.isatty() else 160)
ROOT = Path(__file__).resolve().parents[1]  # the project's checkout: benchmarks run from one
BENCH_DIR = ROOT / ".supernet" / "bench"
BENCH_INFRA = InfraSettings(
    kafka_port=39092,
    kafka_controller_port=39093,
    mqtt_port=31883,
    prometheus_port=39090,
    state_dir=BENCH_DIR / "infra",
)
"""The benchmarks' secured brokers (e2e.py, libraries.py): ports and state of their own."""


def supernet(*args: str) -> list[str]:
    """The argv of a `supernet` command, run by this interpreter."""
    return [sys.executable, "-m", "router", *args]


class Procs:
    """Child processes of a benchmark (``router.support.procs.Child``), each with a log
    file, stopped by pid at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, Child]] = []
        self.argv: dict[str, list[str]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        """Start ``argv`` with its output appended to ``<logs>/<name>.log``."""
        proc = Child(name, argv, self.logs / f"{name}.log", env)
        self.procs.append((name, proc))
        self.argv[name] = argv
        return proc

    def get(self, name: str) -> Child | None:
        """The latest process started under ``name``."""
        found = [p for n, p in self.procs if n == name]
        return found[-1] if found else None

    def pid(self, name: str) -> int:
        """The pid of the latest process started under ``name``."""
        proc = self.get(name)
        assert proc is not None, f"{name} was not started"
        return proc.pid

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def ready(self, name: str, signal: Awaitable[object], limit_s: float = 90) -> None:
        """Until ``signal`` (that ``name`` is ready); RuntimeError if it exits first or
        ``limit_s`` passes."""
        proc = self.get(name)
        assert proc is not None, f"{name} was not started"
        try:
            await ready_or_exited(proc, signal, limit_s, "ready")
        except (ChildExited, TimeoutError) as e:
            raise RuntimeError(str(e)) from None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Signal the latest process of ``name`` (by pid) and reap it; its pid, or None."""
        proc = self.get(name)
        if proc is None or not proc.alive():
            return None
        proc.signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()
        return proc.pid

    def stop(self, names: set[str] | None = None, timeout: float = 40) -> None:
        """SIGTERM the selected processes, wait ``timeout`` s each, then SIGKILL."""
        chosen = [(n, p) for n, p in self.procs if names is None or n in names]
        for _, proc in chosen:
            proc.signal(signal.SIGTERM)
        for _, proc in chosen:
            try:
                proc.wait(timeout)
            except TimeoutError:
                proc.signal(signal.SIGKILL)
                proc.wait()
        self.procs = [(n, p) for n, p in self.procs if names is not None and n not in names]


def network_dir(base: Path, path: Path | None) -> Path:
    """``path``, or the seed-1 network under ``base`` (generated once, then reused)."""
    if path is not None:
        return path
    target = base / "network-1"
    if not (target / "network.json").exists():
        console.print(f"generating the seed-1 network into {target}")
        generator.write(generator.generate(1), target)
    return target


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from /proc), or [] if it is gone."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in task.read_text().split()]
    return out


CLOCK_TICKS: float = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, descendants: bool = True) -> float:
    """CPU seconds (user and system) that ``pid`` (and its live descendants) have used,
    from /proc (0 for a process that is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3, "state", on
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return own + (sum(cpu_s(c) for c in children(pid)) if descendants else 0.0)


@dataclass
class CpuMeter:
    """CPU seconds per named process tree, read from /proc: what a benchmark step cost
    each part of the system (workers, carriers, brokers), and ``load``: this process
    alone (a benchmark runs its load generator in-process)."""

    pids: dict[str, int]

    def read(self) -> dict[str, float]:
        trees = {name: cpu_s(pid) for name, pid in self.pids.items()}
        return trees | {"load": cpu_s(os.getpid(), descendants=False)}

    @staticmethod
    def per_message(before: dict[str, float], after: dict[str, float], messages: int
                    ) -> dict[str, float]:  # fmt: skip
        """Microseconds of CPU per message for each process between two ``read``s, and
        their ``total``."""
        if messages <= 0:
            return {}
        us = {k: (after[k] - before[k]) * 1e6 / messages for k in before if k in after}
        return us | {"total": sum(us.values())}


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def fleet_workers(fleet_pid: int) -> dict[int, int]:
    """Slot -> pid of the fleet's running workers (the fleet names slot i `<x>-w<i>`)."""
    slots: dict[int, int] = {}
    for child in children(fleet_pid):
        argv = cmdline(child)
        if "--instance" in argv[:-1]:
            m = re.search(r"-w(\d+)$", argv[argv.index("--instance") + 1])
            if m:
                slots[int(m.group(1))] = child
    return slots


_FLAGS: dict[str, frozenset[str]] = {}


def flags_of(*command: str) -> frozenset[str]:
    """The long options a `supernet` command offers today (from its --help)."""
    key = " ".join(command)
    if key not in _FLAGS:
        text = subprocess.run(
            supernet(*command, "--help"), capture_output=True, text=True, check=False
        ).stdout
        _FLAGS[key] = frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", text))
    return _FLAGS[key]


def infra_env(settings: InfraSettings) -> dict[str, str]:
    """The environment under which `supernet infra` acts on these brokers."""
    env = dict(os.environ)
    for name, var in InfraSettings.ENV.items():
        env[var] = str(getattr(settings, name))
    return env


def infra_up(settings: InfraSettings, names: Sequence[str], timeout: float = 240) -> None:
    """`supernet infra up --only ...` in a child process: the brokers it starts are not
    children of this one (they run in their own session), so a SIGKILL leaves no zombie."""
    only = [arg for name in names for arg in ("--only", name)]
    result = subprocess.run(
        supernet("infra", "up", *only), env=infra_env(settings), capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"infra up {' '.join(names)} failed:\n{result.stderr[-3000:]}")


# -- MQTT identities: every connection is one (Mosquitto makes the username the client id) --


def provision(settings: InfraSettings, role: str, names: Sequence[str]) -> None:
    """With security on, the MQTT identities ``names`` with ``role`` on the Mosquitto of
    ``settings`` (the new ones; a running Mosquitto reloads its files)."""
    if settings.security:
        credentials.provision(settings, role, names)


def security_args(settings: InfraSettings) -> list[str]:
    """The flags that make `supernet carriers`, `worker` or `fleet` use the brokers'
    security (on or off) and the credentials store of ``settings``."""
    return ["--security", "on" if settings.security else "off",
            "--secrets-dir", str(settings.secrets_dir)]  # fmt: skip


def carriers_mqtt_args(settings: InfraSettings, host_id: str) -> list[str]:
    """`supernet carriers` flags for the Mosquitto of ``settings``, as carrier process
    ``host_id`` (its MQTT identity, provisioned with the role ``carriers``)."""
    provision(settings, "carriers", [host_id])
    return ["--mqtt-host", settings.host, "--mqtt-port", str(settings.mqtt_port),
            "--host-id", host_id, *security_args(settings)]  # fmt: skip


def fleet_mqtt_args(settings: InfraSettings, mqtt_user: str, workers: int) -> list[str]:
    """`supernet fleet` flags for the Mosquitto of ``settings``: slot i connects as
    ``<mqtt_user>-w<i>`` (role ``router``), provisioned for every slot."""
    provision(settings, "router", [f"{mqtt_user}-w{i}" for i in range(workers)])
    return ["--mqtt-host", settings.host, "--mqtt-port", str(settings.mqtt_port),
            "--mqtt-user", mqtt_user, *security_args(settings)]  # fmt: skip


def observer(settings: InfraSettings, name: str) -> MqttAccess:
    """An ``observer`` identity (reads statuses and directories only), e.g. for
    ``CarrierWatch``; provisioned if new."""
    provision(settings, "observer", [name])
    return settings.secrets().mqtt(settings.host, settings.mqtt_port, name)


# -- Kafka users and grants ----------------------------------------------------------------


def kafka_admin(settings: InfraSettings) -> KafkaAccess:
    """The Kafka of ``settings`` as ``admin``: the benchmark's own clients."""
    return settings.kafka("admin")


def kafka_user(settings: InfraSettings, user: str) -> KafkaAccess:
    """The Kafka of ``settings`` as SCRAM user ``user`` (``fleet``, ``producer``,
    ``receipts``); plain text without credentials with security off."""
    return settings.kafka(user)


async def grant(settings: InfraSettings, pipeline: Pipeline) -> None:
    """With security on, grant ``pipeline``'s ACLs (``kafka_acls.grant``): its fleet,
    producer and receipt readers may then use its topics."""
    if settings.security:
        await kafka_acls.grant(kafka_admin(settings), pipeline)


async def revoke(settings: InfraSettings, pipeline: Pipeline) -> None:
    """Take back what ``grant`` gave and delete the pipeline's topics: neither the brokers'
    ACL list nor their partitions grow run by run (an idle broker with 360 partitions
    left by earlier runs spent 8% of a core)."""
    if settings.security:
        await kafka_acls.revoke(kafka_admin(settings), pipeline)
    attempts = pipeline.attempts or f"{pipeline.requests}.attempts"
    await kafka.delete_topics(
        kafka_admin(settings),
        [pipeline.requests, pipeline.receipts, pipeline.dead_letter, attempts],
    )


@dataclass(frozen=True, slots=True)
class Rec:
    """One Kafka record as read back."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int  # ms


class TopicReader:
    """Follows every partition of some topics from offset 0 without a consumer group (as
    ``access``, e.g. ``kafka_admin``), handing each record to ``on_record``; survives a
    broker that goes away and returns."""

    def __init__(
        self, access: KafkaAccess, topics: dict[str, int], on_record: Callable[[Rec], None]
    ) -> None:
        self.access = access
        self.tps = [kafka.TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        self.on_record = on_record
        self.consumer = kafka.consumer(access, None)
        self.records = 0
        self.arrived = asyncio.Event()  # set on every batch of records
        self.errors = 0

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        for tp in self.tps:
            self.consumer.seek(tp, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await kafka.let_go(self.consumer.stop)

    async def poll(self, timeout_ms: int = 200) -> int:
        """Read what is there (waiting up to ``timeout_ms``); the number of records."""
        try:
            batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        except kafka.KafkaError:
            self.errors += 1
            await asyncio.sleep(0.5)
            return 0
        n = 0
        for records in batch.values():
            for r in records:
                self.on_record(
                    Rec(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers),
                        r.timestamp)
                )  # fmt: skip
                n += 1
        if n:
            self.records += n
            self.arrived.set()
        return n

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()

    async def behind(self) -> int | None:
        """Records not read yet, or None if Kafka does not answer."""
        try:
            async with asyncio.timeout(10):
                ends = await self.consumer.end_offsets(self.tps)
                left = 0
                for tp in self.tps:
                    left += max(0, ends[tp] - await self.consumer.position(tp))
                return left
        except (kafka.KafkaError, TimeoutError):
            return None

    async def quiet(self, idle_s: float, limit_s: float) -> bool:
        """Until no record came for ``idle_s``, at most ``limit_s``; False on the limit."""
        return await until_idle(self.arrived, lambda: False, idle_s, limit_s)

    async def catch_up(self, limit_s: float = 60) -> bool:
        """Read until every partition is at its end; False if that took over ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            left = await self.behind()
            if left == 0:
                return True
            await self.poll()
        return False


async def until_idle(
    event: asyncio.Event, done: Callable[[], bool], idle_s: float, limit_s: float
) -> bool:
    """Wait until ``done()``, or until ``event`` was not set for ``idle_s`` seconds (True
    in both cases), or ``limit_s`` passed (False). Whoever makes progress sets ``event``."""
    deadline = time.monotonic() + limit_s
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        event.clear()
        try:
            async with asyncio.timeout(min(idle_s, left)):
                await event.wait()
        except TimeoutError:
            if left > idle_s:
                return True  # a whole idle_s without progress
    return True
