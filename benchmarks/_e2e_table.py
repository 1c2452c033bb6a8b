"""The figures of the end-to-end benchmark (benchmarks/e2e.py): a step's and a sweep's
results, the table and the security ratio (pure: no I/O)."""

from __future__ import annotations

import dataclasses

from rich.table import Table


@dataclasses.dataclass
class Step:
    offered: float
    achieved: float
    produced: int
    missing: int
    p50_ms: float | None  # request -> sent
    p99_ms: float | None
    failed: int
    submitted_p50_ms: float | None = None  # request -> submitted to the carrier
    submitted_p99_ms: float | None = None
    durable_p50_ms: float | None = None  # carrier accept -> sent receipt appended
    durable_p99_ms: float | None = None
    broken: str | None = None  # why this step's figures are not a measurement
    # Microseconds of CPU per message over the step, per process (workers, carriers,
    # kafka, mosquitto, load: this benchmark's process, which runs the load generator).
    cpu_us: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Result:
    system: str  # "ceiling" or "routed"
    workers: int
    steps: list[Step]
    saturation: float
    half: Step | None
    security: str = "on"  # the brokers': "on" (TLS, authentication, ACLs) or "off"
    security_ratio: float | None = None  # --compare-security: saturation on / off
    broken: str | None = None  # a step broke twice: the sweep stopped there, no ratio


def ms(v: float | None) -> str:
    """Milliseconds for the table and the lines: ``-`` when there were none."""
    return "-" if v is None else f"{v:,.0f}"


def latency_text(s: Step) -> str:
    return (
        f"p50 {ms(s.p50_ms):>6} p99 {ms(s.p99_ms):>6} ms (submitted p99 "
        f"{ms(s.submitted_p99_ms)}, durable p99 {ms(s.durable_p99_ms)})"
    )


def cpu_text(cpu: dict[str, float]) -> str:
    return "  cpu us/msg " + " ".join(f"{k} {v:,.0f}" for k, v in cpu.items()) if cpu else ""


def broken(steps: list[Step], half: Step | None) -> str | None:
    """Why a sweep is not a measurement: its last step (or latency step) broke twice."""
    for s in (half, steps[-1] if steps else None):
        if s is not None and s.broken:
            return s.broken
    return None if steps else "no step ran"


def compare_security(results: list[Result]) -> None:
    """Set ``security_ratio`` on each secured result that has counterparts with security
    off (same system, same workers): the mean saturation of the secured results over the
    mean of those without (over every round of --rounds)."""
    means: dict[tuple[str, str, int], list[float]] = {}
    for r in results:
        if not r.broken:
            means.setdefault((r.security, r.system, r.workers), []).append(r.saturation)
    for r in results:
        if r.broken or ("on", r.system, r.workers) not in means:
            continue
        on, off = means[("on", r.system, r.workers)], means.get(("off", r.system, r.workers))
        if r.security == "on" and off and sum(off):
            r.security_ratio = (sum(on) / len(on)) / (sum(off) / len(off))


def top_cpu(r: Result) -> str:
    """The whole system's CPU per message in the step that reached saturation."""
    top = max(r.steps, key=lambda s: s.achieved, default=None)
    return f"{top.cpu_us['total']:,.0f}" if top and "total" in top.cpu_us else "-"


def render(results: list[Result]) -> Table:
    table = Table(title="end to end: sustained throughput and latency at half of saturation")
    compared = any(r.security == "off" for r in results)
    columns = ["system", "workers", "security", "saturation msg/s", "ratio to ceiling",
               "sent p50 ms @50%", "sent p99 ms @50%", "submitted p99 ms @50%",
               "durable p99 ms @50%", "CPU us/msg at saturation"]  # fmt: skip
    if compared:
        columns.append("security on / off")
    for col in columns:
        table.add_column(col, justify="right")
    ceilings = {(r.security, r.workers): r for r in results if r.system == "ceiling"}
    for r in results:
        ceiling = ceilings.get((r.security, r.workers))
        ratio = ""
        if r.system == "routed" and ceiling is not None:
            # A broken sweep on either side is no measurement: no ratio from it.
            if r.broken or ceiling.broken:
                ratio = "broken"
            elif ceiling.saturation:
                ratio = f"{r.saturation / ceiling.saturation:.0%}"
        half = r.half
        row = [
            r.system,
            str(r.workers),
            r.security,
            f"{r.saturation:,.0f}" + (" (broken)" if r.broken else ""),
            ratio,
            ms(half.p50_ms) if half else "-",
            ms(half.p99_ms) if half else "-",
            ms(half.submitted_p99_ms) if half else "-",
            ms(half.durable_p99_ms) if half else "-",
            top_cpu(r),
        ]
        if compared:
            row.append(f"{r.security_ratio:.0%}" if r.security_ratio is not None else "")
        table.add_row(*row)
    return table


def broken_lines(results: list[Result]) -> list[str]:
    return [f"{r.system}, {r.workers} worker(s), security {r.security}: broken: {r.broken}"
            for r in results if r.broken]  # fmt: skip
