"""Encoding and segment counts against hand-checked vectors at every boundary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.contracts.codes import Code
from router.core.segments import GSM7, GSM7_BASIC, GSM7_EXTENSION, UCS2, count

VECTORS = [
    # body, encoding, segments, units
    ("a", GSM7, 1, 1),
    ("a" * 160, GSM7, 1, 160),
    ("a" * 161, GSM7, 2, 161),
    ("a" * 306, GSM7, 2, 306),
    ("a" * 307, GSM7, 3, 307),
    ("@£$¥èéùìòÇ", GSM7, 1, 10),  # basic-table non-ASCII stays GSM-7
    ("€" * 80, GSM7, 1, 160),  # extension characters cost two septets
    ("€" * 80 + "a", GSM7, 2, 161),
    ("a" * 159 + "€", GSM7, 2, 161),
    ("a" * 152 + "{" + "b" * 153, GSM7, 3, 307),  # '{' may not straddle parts: 152 | 2+151 | 2
    ("a" * 151 + "{" + "b" * 153, GSM7, 2, 306),
    ("[]{}~^|\\", GSM7, 1, 16),
    ("`", UCS2, 1, 1),  # backtick is not in GSM 03.38
    ("ж" * 70, UCS2, 1, 70),
    ("ж" * 71, UCS2, 2, 71),
    ("ж" * 134, UCS2, 2, 134),
    ("ж" * 135, UCS2, 3, 135),
    ("😀" * 35, UCS2, 1, 70),  # emoji outside the BMP: two UTF-16 units
    ("😀" * 36, UCS2, 2, 72),
    ("a" * 66 + "😀", UCS2, 1, 68),
    ("a" * 69 + "😀", UCS2, 2, 71),
    ("a" * 66 + "😀" + "b" * 66, UCS2, 3, 134),  # the pair cannot straddle: 66 | 2+65 | 1
    ("a" * 65 + "😀" + "b" * 67, UCS2, 2, 134),  # 65+2 | 67: fits exactly
    ("a" * 65 + "😀" + "b" * 65, UCS2, 2, 132),
    ("Hi 😀 your code is 1234", UCS2, 1, 23),
    ("Ça coûte 5€", UCS2, 1, 11),  # û is not GSM-7: the whole message goes UCS-2
    ("Ça coute 5€", GSM7, 1, 12),
    ("line\nbreak\r", GSM7, 1, 11),
    ("tab\there", UCS2, 1, 8),
    ("a" * 1600, GSM7, 11, 1600),
]


@pytest.mark.parametrize(("body", "encoding", "segments", "units"), VECTORS)
def test_vectors(body: str, encoding: str, segments: int, units: int) -> None:
    got = count(body)
    assert (got.encoding, got.segments, got.units, got.code) == (encoding, segments, units, 0)


def test_refusals() -> None:
    assert count("").code == Code.EMPTY_BODY
    assert count("a" * 1601).code == Code.BODY_TOO_LONG
    assert count("😀" * 1601).code == Code.BODY_TOO_LONG
    assert count("😀" * 1600).segments == -(-1600 // 33)  # 33 pairs fill 66 of 67 units


def _reference(body: str) -> tuple[str, int]:
    """Greedy packing, one character at a time, never splitting a character."""
    gsm = all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in body)
    costs = (
        [2 if ch in GSM7_EXTENSION else 1 for ch in body]
        if gsm
        else [len(ch.encode("utf-16-le")) // 2 for ch in body]
    )
    single, part = (160, 153) if gsm else (70, 67)
    if sum(costs) <= single:
        return (GSM7 if gsm else UCS2), 1
    parts, used = 1, 0
    for c in costs:
        if used + c > part:
            parts, used = parts + 1, 0
        used += c
    return (GSM7 if gsm else UCS2), parts


@given(
    st.text(
        alphabet=st.sampled_from(["a", "€", "{", "é", "ж", "😀", "\n", " ", "1"]),
        min_size=1,
        max_size=500,
    )
)
def test_matches_a_greedy_reference(body: str) -> None:
    got = count(body)
    assert (got.encoding, got.segments) == _reference(body)
