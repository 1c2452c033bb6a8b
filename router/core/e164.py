"""Destinations: E.164 normalisation, validation and country lookup from compiled data.

``phonenumbers`` is far too slow to parse every message, so it is used only to build a
small table (``countries.json``, shipped in the package): prefix -> ISO region, and region
-> valid total digit counts. The route table folds these prefixes in, so the per-message
check is a string test plus a length test on the matched entry (see ``decision.py``).
Rebuild the data after a ``phonenumbers`` upgrade with ``python -m router.core.e164``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

MIN_DIGITS = 7  # shortest E.164 numbers in use (e.g. Niue, +683 4002) have 7 digits
MAX_DIGITS = 15  # E.164 maximum, country code included
DATA_FILE = "countries.json"
UNKNOWN_COUNTRY = "ZZ"

_FORMATTING = re.compile(r"[\s\-.()/]")


@dataclass(frozen=True, slots=True)
class CountryData:
    """Prefix -> region, and region -> valid total digit counts (country code included)."""

    regions: dict[str, str]
    lengths: dict[str, frozenset[int]]

    def country_of(self, digits: str) -> str | None:
        """The region of the longest region prefix of ``digits``; None for no country code."""
        for n in range(min(len(digits), 6), 0, -1):
            region = self.regions.get(digits[:n])
            if region is not None:
                return region
        return None

    def valid_lengths(self, region: str) -> frozenset[int]:
        return self.lengths.get(region, frozenset(range(MIN_DIGITS, MAX_DIGITS + 1)))

    def is_valid(self, digits: str) -> bool:
        """Slow-path validity: digits only, known country code, a length valid there."""
        if not (digits.isascii() and digits.isdigit()):
            return False
        region = self.country_of(digits)
        return region is not None and len(digits) in self.valid_lengths(region)


def normalise(raw: str) -> str | None:
    """E.164 digits without '+' from a number as people type it, or None if not E.164.

    Accepts a leading '+' followed by digits and the usual formatting characters
    (spaces, '-', '.', '(', ')', '/'). National formats and '00' prefixes are refused:
    the international prefix differs by country, so guessing would misroute.
    """
    s = raw.strip()
    if not s.startswith("+"):
        return None
    digits = _FORMATTING.sub("", s[1:])
    if not (digits.isascii() and digits.isdigit()) or digits[0] == "0":
        return None
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return None
    return digits


def load_country_data(path: Path | None = None) -> CountryData:
    """Load the compiled data (by default the copy shipped in this package)."""
    if path is None:
        raw = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    else:
        raw = path.read_text(encoding="utf-8")
    data = json.loads(raw)
    return CountryData(
        regions=dict(data["regions"]),
        lengths={r: frozenset(v) for r, v in data["lengths"].items()},
    )


def _expand_leading_digits(pattern: str, max_len: int = 5) -> list[str]:
    """The shortest digit strings that every number matching ``pattern`` starts with."""
    rx = re.compile(f"(?:{pattern})")
    found: list[str] = []
    frontier = [""]
    for _ in range(max_len):
        nxt: list[str] = []
        for p in frontier:
            for d in "0123456789":
                s = p + d
                if rx.fullmatch(s):
                    found.append(s)
                else:
                    nxt.append(s)
        frontier = nxt
    return found


def build_country_data() -> dict[str, object]:
    """Compile the data from ``phonenumbers`` metadata (build time only)."""
    import phonenumbers  # build-time dependency only
    from phonenumbers import PhoneMetadata

    regions: dict[str, str] = {}
    lengths: dict[str, list[int]] = {}
    for cc, codes in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()):
        prefix = str(cc)
        main = phonenumbers.region_code_for_country_code(cc)
        regions[prefix] = main
        for region in codes:
            meta = (
                PhoneMetadata.metadata_for_nongeo_region(cc)
                if region == "001"
                else PhoneMetadata.metadata_for_region(region)
            )
            if meta is None:
                continue
            desc = meta.general_desc
            national = (desc.possible_length if desc is not None else None) or ()
            key = region if region != "001" else f"001-{cc}"
            if region == "001":
                regions[prefix] = key
            lengths[key] = sorted({len(prefix) + n for n in national if n > 0})
            if region == main or region == "001":
                continue
            if meta.leading_digits:
                for lead in _expand_leading_digits(meta.leading_digits):
                    regions.setdefault(prefix + lead, region)
            elif cc == 1:  # NANP: find the region's area codes by asking phonenumbers
                for area in range(200, 1000):
                    for subscriber in ("2345678", "5550100", "8675309"):
                        num = phonenumbers.parse(f"+1{area}{subscriber}")
                        if phonenumbers.region_code_for_number(num) == region:
                            regions[f"1{area}"] = region
                            break
    return {"regions": dict(sorted(regions.items())), "lengths": lengths}


if __name__ == "__main__":
    out = Path(__file__).with_name(DATA_FILE)
    out.write_text(json.dumps(build_country_data(), indent=0, sort_keys=True) + "\n")
    print(f"wrote {out}")
