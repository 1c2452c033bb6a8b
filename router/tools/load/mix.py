"""The traffic mix: what share of the load is what, with defaults and a TOML override.

Every field is a share of all requests (0..1) unless its comment says otherwise. A TOML
file (``supernet load --mix FILE``) may set any of them; the tables it gives (``classes``,
``segments``, ``countries``) replace the default table as a whole. Unknown keys are
errors, so a typo never silently leaves a default in place.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec

Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Weight = Annotated[float, msgspec.Meta(ge=0.0)]

# Share of A2P SMS traffic by destination country, roughly as the large CPaaS platforms
# see it: a few huge markets (US, India, Indonesia, Brazil), then a long tail. Relative
# weights; countries the network cannot reach are dropped and the rest renormalised.
DEFAULT_COUNTRIES: dict[str, float] = {
    "US": 20.0, "IN": 12.0, "ID": 6.0, "BR": 6.0, "GB": 4.5, "NG": 3.5, "MX": 3.5,
    "DE": 3.0, "FR": 3.0, "PH": 3.0, "RU": 2.5, "TR": 2.0, "VN": 2.0, "PK": 2.0,
    "BD": 1.8, "EG": 1.8, "CA": 1.5, "SA": 1.5, "ZA": 1.5, "CN": 1.5, "IT": 1.2,
    "ES": 1.2, "CO": 1.2, "KE": 1.2, "JP": 1.0, "AR": 1.0, "TH": 1.0, "AU": 1.0,
    "MY": 0.8, "PL": 0.8, "AE": 0.8, "NL": 0.7, "UA": 0.7, "PE": 0.6, "CL": 0.6,
}  # fmt: skip

DEFAULT_CLASSES: dict[str, float] = {"otp": 0.30, "transactional": 0.50, "marketing": 0.20}

# Body length, by segment count: 1, 2, 3 to 5 ("multi") and 6 or more ("long").
DEFAULT_SEGMENTS: dict[str, float] = {"single": 0.78, "double": 0.14, "multi": 0.06, "long": 0.02}

SEGMENT_BUCKETS: tuple[str, ...] = ("single", "double", "multi", "long")
CLASSES: tuple[str, ...] = ("otp", "transactional", "marketing")


class MixError(Exception):
    """The mix file is missing or malformed; the message names the file and the key."""


class Mix(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The traffic shares. See ``router/tools/load/mix.example.toml`` for a commented file."""

    invalid_share: Share = 0.005  # destinations that are not valid numbers
    unicode_share: Share = 0.15  # bodies outside GSM-7 (emoji, Cyrillic, Arabic, CJK)
    cap_share: Share = 0.20  # requests with a max_price
    cap_too_low_share: Share = 0.15  # of the capped: cap below the cheapest route, on purpose
    validity_share: Share = 0.30  # requests with a validity_s
    sender_share: Share = 0.60  # requests with a "from"
    tail_share: Share = 0.10  # traffic to reachable countries not listed in `countries`
    accounts: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 8  # distinct accounts (Zipf)
    classes: dict[str, Weight] = msgspec.field(default_factory=lambda: dict(DEFAULT_CLASSES))
    segments: dict[str, Weight] = msgspec.field(default_factory=lambda: dict(DEFAULT_SEGMENTS))
    countries: dict[str, Weight] = msgspec.field(default_factory=lambda: dict(DEFAULT_COUNTRIES))

    def __post_init__(self) -> None:
        _check_table("classes", self.classes, CLASSES)
        _check_table("segments", self.segments, SEGMENT_BUCKETS)
        for region in self.countries:
            if not (len(region) == 2 and region.isascii() and region.isupper()):
                raise ValueError(f"countries: {region!r} is not an ISO 3166-1 alpha-2 code")


def _check_table(name: str, table: dict[str, float], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}; allowed: {list(allowed)}")
    if sum(table.values()) <= 0:
        raise ValueError(f"{name}: the weights must not all be zero")


def load_mix(path: Path) -> Mix:
    """Read a TOML mix file over the defaults. Raises MixError naming what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MixError(f"{path}: no such mix file") from None
    except tomllib.TOMLDecodeError as e:
        raise MixError(f"{path}: not valid TOML: {e}") from None
    try:
        return msgspec.convert(data, Mix)
    except (msgspec.ValidationError, ValueError) as e:
        raise MixError(f"{path}: {e}") from None


def example_path() -> Path:
    """The commented sample mix file shipped with the package."""
    return Path(__file__).with_name("mix.example.toml")
