"""Fault scenarios: TOML files that change carriers' behaviour at set times.

Format (times in seconds from the moment the carriers are up; ``carriers`` is a glob
over carrier ids, e.g. ``gb-*``; several globs may be joined with ``,``)::

    name = "evening outage"

    [[events]]
    kind = "offline"          # stops answering, status "offline"; back "online" after
    at = 10                   # `duration` seconds (no duration: stays offline)
    carriers = "gb-ee"
    duration = 30

    [[events]]
    kind = "latency_spike"    # submit latency and report delay multiplied by `factor`
    at = 5
    carriers = "agg-eu-*"
    factor = 8.0
    duration = 20

    [[events]]
    kind = "delivery_drop"    # true delivery probability multiplied by `factor`
    at = 0
    carriers = "in-*"
    factor = 0.5

    [[events]]
    kind = "lost_reports"     # share of delivery reports never sent
    at = 15
    carriers = "agg-global-3"
    share = 0.6
    duration = 60

    [[events]]
    kind = "throttle"         # throughput cap set to `mps`
    at = 20
    carriers = "de-*"
    mps = 2.0
    duration = 10

    [[events]]
    kind = "price_change"     # billed price multiplied by `factor` (visible in results
    at = 30                   # and reports; the deck on disk is unchanged)
    carriers = "fr-bouygues"
    factor = 1.25

Every event without ``duration`` lasts until the end of the run; with one, its change is
undone at ``at + duration`` (back to the generated value). Overlapping events on the same
carrier and setting: the one applied last wins.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import msgspec

from carriers.endpoint import Endpoint


class _Event(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    at: float
    carriers: str
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.at < 0:
            raise ValueError(f"at must be >= 0, not {self.at}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be > 0, not {self.duration}")


class Offline(_Event, tag="offline"):
    pass


class LatencySpike(_Event, tag="latency_spike"):
    factor: float


class DeliveryDrop(_Event, tag="delivery_drop"):
    factor: float


class LostReports(_Event, tag="lost_reports"):
    share: float


class Throttle(_Event, tag="throttle"):
    mps: float


class PriceChange(_Event, tag="price_change"):
    factor: float


Event = Offline | LatencySpike | DeliveryDrop | LostReports | Throttle | PriceChange


class Scenario(msgspec.Struct, forbid_unknown_fields=True):
    events: list[Event]
    name: str = ""


class ScenarioError(Exception):
    """A scenario file is malformed; the message says where and what."""


@dataclass(frozen=True, slots=True)
class Step:
    """One change at one time: apply an event, or undo it (``revert``)."""

    at: float
    event: Event
    revert: bool = False

    def describe(self) -> str:
        verb = "end" if self.revert else "start"
        return f"{verb} {self.event.__class__.__name__} on {self.event.carriers}"


def parse(text: str, source: str = "<scenario>") -> Scenario:
    try:
        raw = tomllib.loads(text)
        return msgspec.convert(raw, Scenario)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: not valid TOML: {e}") from None
    except (msgspec.ValidationError, ValueError) as e:
        raise ScenarioError(f"{source}: {e}") from None


def load(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    return parse(text, str(path))


def example_path() -> Path:
    """The example scenario shipped with the package."""
    return Path(str(resources.files("carriers") / "scenarios" / "example.toml"))


def timeline(scenario: Scenario) -> list[Step]:
    """Every change in time order (stable: ties keep file order, undo before apply)."""
    steps: list[tuple[float, int, int, Step]] = []
    for i, event in enumerate(scenario.events):
        steps.append((event.at, 1, i, Step(event.at, event)))
        if event.duration is not None:
            end = event.at + event.duration
            steps.append((end, 0, i, Step(end, event, revert=True)))
    steps.sort(key=lambda s: s[:3])
    return [s[3] for s in steps]


def matches(pattern: str, carrier_id: str) -> bool:
    return any(fnmatch.fnmatchcase(carrier_id, p.strip()) for p in pattern.split(","))


def apply(step: Step, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """Apply one step to the matching endpoints; returns those it changed."""
    changed = [e for e in endpoints if matches(step.event.carriers, e.id)]
    event, undo = step.event, step.revert
    for e in changed:
        o = e.overrides
        match event:
            case Offline():
                o.offline = not undo
            case LatencySpike(factor=f):
                o.latency_factor = 1.0 if undo else f
            case DeliveryDrop(factor=f):
                o.delivery_factor = 1.0 if undo else f
            case LostReports(share=s):
                o.report_loss = None if undo else s
            case Throttle(mps=m):
                e.set_throughput(None if undo else m)
            case PriceChange(factor=f):
                o.price_factor = 1.0 if undo else f
    return changed
