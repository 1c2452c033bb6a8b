"""Real numbering data: mobile prefix -> operator, from the `phonenumbers` package.

`phonenumbers` ships libphonenumber's carrier metadata as ``phonenumbers.carrierdata``:
a dict from a number prefix (E.164 digits, country code included) to ``{locale: operator
name}``. This module turns it into plain records, English locale only, each with the
country calling code and the ISO region it belongs to.

Quirks of the data, handled here:

- a few prefixes carry no English name (Russian-only Tele2 prefixes under +7): they are
  skipped, because the spec asks for the English locale (`skipped_without_english()`);
- some names are UTF-8 read as Latin-1 ("TelefÃ³nica"): repaired where the round trip
  is clean;
- a country calling code can serve several regions (+1 NANP, +7 RU/KZ, +44 GB/GG/JE/IM,
  ...): the region is found by completing the prefix with the digits of each region's
  example numbers and asking libphonenumber whether the result is valid for that region,
  falling back to the region whose example numbers share the longest prefix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers.carrierdata import CARRIER_DATA

LOCALE = "en"

_EXAMPLE_TYPES = (
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.VOIP,
    PhoneNumberType.PAGER,
)


@dataclass(frozen=True, slots=True, order=True)
class OperatorPrefix:
    """One prefix of one mobile operator."""

    prefix: str  # E.164 digits, country code included, no '+'
    country_code: int
    region: str  # ISO 3166-1 alpha-2 (libphonenumber's region code)
    operator: str  # English name, as published


def repair_name(name: str) -> str:
    """Undo UTF-8-read-as-Latin-1 mojibake and stray whitespace in an operator name."""
    name = " ".join(name.split())
    if "Ã" in name or "Â" in name:
        try:
            return name.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return name
    return name


@functools.cache
def country_code_of(prefix: str) -> int:
    """The country calling code a prefix starts with (country codes are prefix-free)."""
    for n in (1, 2, 3):
        code = int(prefix[:n])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return code
    raise ValueError(f"prefix {prefix!r} starts with no known country calling code")


@functools.cache
def _examples(region: str) -> tuple[str, ...]:
    out: list[str] = []
    for kind in _EXAMPLE_TYPES:
        ex = phonenumbers.example_number_for_type(region, kind)
        if ex is not None:
            out.append(str(ex.national_number))
    return tuple(out)


def region_of(prefix: str) -> str:
    """The ISO region a prefix belongs to."""
    code = country_code_of(prefix)
    regions: tuple[str, ...] = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
    if len(regions) == 1:
        return regions[0]
    national = prefix[len(str(code)) :]
    for region in regions:
        for example in _examples(region):
            if len(example) < len(national):
                continue
            number = phonenumbers.PhoneNumber(
                country_code=code, national_number=int(national + example[len(national) :])
            )
            if phonenumbers.is_valid_number_for_region(number, region):
                return region
    best, best_len = regions[0], -1
    for region in regions:
        for example in _examples(region):
            common = 0
            for a, b in zip(example, national, strict=False):
                if a != b:
                    break
                common += 1
            if common > best_len:
                best, best_len = region, common
    return best


@functools.cache
def operator_prefixes() -> tuple[OperatorPrefix, ...]:
    """Every prefix with an English operator name, sorted by prefix."""
    out: list[OperatorPrefix] = []
    for prefix, names in CARRIER_DATA.items():
        name = names.get(LOCALE)
        if not name:
            continue
        out.append(
            OperatorPrefix(
                prefix=prefix,
                country_code=country_code_of(prefix),
                region=region_of(prefix),
                operator=repair_name(name),
            )
        )
    out.sort()
    return tuple(out)


def skipped_without_english() -> list[str]:
    """Prefixes that the data names in other locales only (left out of the network)."""
    return sorted(p for p, names in CARRIER_DATA.items() if not names.get(LOCALE))


def geographic_country_codes() -> list[int]:
    """Every country calling code that belongs to a country (not the global services)."""
    return sorted(
        code
        for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()
        if regions and regions != ("001",)
    )


def regions_of_country_code(code: int) -> tuple[str, ...]:
    regions: tuple[str, ...] = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    return regions
