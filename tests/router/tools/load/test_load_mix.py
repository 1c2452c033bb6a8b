"""The traffic model: reproducible, shares as configured, valid numbers, varied bodies."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import phonenumbers
import pytest

from router.contracts.wire import ENCODER, SendRequest, decode_request
from router.core import segments
from router.core.e164 import load_country_data, normalise
from router.tools.load.mix import DEFAULT_CLASSES, Mix, MixError, example_path, load_mix
from router.tools.load.numbers import NumberPlan, build_plan, read_decks
from router.tools.load.traffic import Traffic
from tests.router.tools.load.load_helpers import write_network

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
DRAWS = 20_000


def draw(plan: NumberPlan, mix: Mix, seed: int, n: int) -> list[SendRequest]:
    traffic = Traffic(plan, mix, seed, "t-")
    return [traffic.next(created_at=1_700_000_000_000) for _ in range(n)]


@pytest.fixture(scope="module")
def requests(tiny_plan: NumberPlan) -> list[SendRequest]:
    return draw(tiny_plan, Mix(), seed=11, n=DRAWS)


def test_same_seed_same_messages(tiny_plan: NumberPlan) -> None:
    a = [ENCODER.encode(r) for r in draw(tiny_plan, Mix(), 5, 2000)]
    b = [ENCODER.encode(r) for r in draw(tiny_plan, Mix(), 5, 2000)]
    c = [ENCODER.encode(r) for r in draw(tiny_plan, Mix(), 6, 2000)]
    assert a == b
    assert sum(x != y for x, y in zip(a, c, strict=True)) > 1900


def test_the_number_plan_is_seeded(tiny_network: Path) -> None:
    assert build_plan(tiny_network, 8) == build_plan(tiny_network, 8)
    assert build_plan(tiny_network, 8) != build_plan(tiny_network, 9)


def test_requests_round_trip_the_wire_schema(requests: list[SendRequest]) -> None:
    for r in requests[:2000]:
        assert decode_request(ENCODER.encode(r)) == r
    assert len({r.id for r in requests}) == len(requests)


def test_class_shares(requests: list[SendRequest]) -> None:
    counts: Counter[str] = Counter(r.cls for r in requests)
    for cls, share in DEFAULT_CLASSES.items():
        assert counts[cls] / DRAWS == pytest.approx(share, abs=0.02)


def test_shares_of_invalid_unicode_caps_validity(requests: list[SendRequest]) -> None:
    mix = Mix()
    countries = load_country_data()
    invalid = [r for r in requests if not _valid(r.to, countries)]
    # Binomial(20,000, 0.005): mean 100, sd 10; the bounds are 4 sd away.
    assert 60 <= len(invalid) <= 140
    ucs2 = sum(segments.count(r.body).encoding == segments.UCS2 for r in requests)
    assert ucs2 / DRAWS == pytest.approx(mix.unicode_share, abs=0.02)
    capped = sum(r.max_price is not None for r in requests)
    assert capped / DRAWS == pytest.approx(mix.cap_share, abs=0.02)
    with_validity = sum(r.validity_s is not None for r in requests)
    assert with_validity / DRAWS == pytest.approx(mix.validity_share, abs=0.02)
    accounts = Counter(r.account for r in requests)
    assert len(accounts) == mix.accounts
    assert accounts.most_common(1)[0][1] > 2 * accounts.most_common()[-1][1]  # Zipf, not flat


def _valid(to: str, countries: object) -> bool:
    from router.core.e164 import CountryData

    assert isinstance(countries, CountryData)
    digits = normalise(to)
    return digits is not None and countries.is_valid(digits)


def test_country_shares_follow_the_weights(
    tiny_plan: NumberPlan, requests: list[SendRequest]
) -> None:
    weights = Traffic(tiny_plan, Mix(), 11, "t-").countries
    assert sum(weights.values()) == pytest.approx(1.0)
    # The top-heavy order of the defaults survives renormalisation over reachable countries.
    assert weights["US"] > weights["IN"] > weights["BR"] > weights["GB"] > weights["DE"]
    countries = load_country_data()
    seen = Counter(
        countries.country_of(r.to[1:]) for r in requests if E164.match(r.to) and r.to[1:4] != "999"
    )
    valid = sum(seen.values())
    for region, share in weights.items():
        assert seen[region] / valid == pytest.approx(share, abs=0.015), region


def test_valid_destinations_are_mobile_numbers_on_deck_prefixes(
    tiny_network: Path, requests: list[SendRequest]
) -> None:
    countries = load_country_data()
    prefixes = set().union(*read_decks(tiny_network).values())
    valid = [r.to for r in requests if _valid(r.to, countries)]
    assert len(valid) > 0.99 * DRAWS
    for to in valid:
        assert E164.match(to), to
        assert any(to[1 : 1 + n] in prefixes for n in range(1, 8)), to
    for to in valid[:1500]:  # phonenumbers is slow: a sample
        number = phonenumbers.parse(to)
        assert phonenumbers.is_valid_number(number), to
        assert phonenumbers.number_type(number) in (
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        ), to


def test_bodies_vary_in_alphabet_and_length(requests: list[SendRequest]) -> None:
    counted = [segments.count(r.body) for r in requests]
    by_segments = Counter(min(c.segments, 6) for c in counted)
    assert by_segments[1] / DRAWS == pytest.approx(0.78, abs=0.05)
    assert by_segments[2] > 0.05 * DRAWS
    assert sum(by_segments[k] for k in (3, 4, 5)) > 0.02 * DRAWS
    assert by_segments[6] > 0.005 * DRAWS  # a few long ones
    assert all(c.code == 0 for c in counted)  # never empty, never too long
    scripts = {
        "cyrillic": re.compile("[\u0400-\u04ff]"),
        "arabic": re.compile("[\u0600-\u06ff]"),
        "cjk": re.compile("[\u4e00-\u9fff]"),
        "emoji": re.compile("[\U0001f300-\U0001faff]"),
    }
    for name, rx in scripts.items():
        assert any(rx.search(r.body) for r in requests), name
    otp_codes = [re.search(r"\d{6}", r.body) for r in requests if r.cls == "otp"]
    assert all(m is not None for m in otp_codes)
    assert len({m.group() for m in otp_codes if m}) > 0.9 * len(otp_codes)


def test_caps_sit_around_the_cheapest_price_and_some_are_too_low(
    tiny_plan: NumberPlan, requests: list[SendRequest]
) -> None:
    cheapest = {s.digits: s.price for stems in tiny_plan.stems.values() for s in stems}
    ratios = []
    for r in requests:
        if r.max_price is None or r.to[1:-4] not in cheapest:
            continue
        price = cheapest[r.to[1:-4]] * segments.count(r.body).segments
        ratios.append(r.max_price / price)
    too_low = sum(x < 0.99 for x in ratios) / len(ratios)
    assert too_low == pytest.approx(Mix().cap_too_low_share, abs=0.04)
    assert max(ratios) < 4.1
    assert min(ratios) > 0.19


def test_mix_overrides_change_the_traffic(tiny_plan: NumberPlan) -> None:
    mix = Mix(
        invalid_share=0.0,
        unicode_share=1.0,
        cap_share=0.0,
        classes={"otp": 1.0},
        countries={"GB": 1.0},
        tail_share=0.0,
    )
    out = draw(tiny_plan, mix, 1, 500)
    assert {r.cls for r in out} == {"otp"}
    assert all(r.to.startswith("+44") for r in out)
    assert all(r.max_price is None for r in out)
    assert all(segments.count(r.body).encoding == segments.UCS2 for r in out)


def test_the_sample_mix_file_holds_the_defaults() -> None:
    assert load_mix(example_path()) == Mix()


def test_a_mix_file_overrides_some_keys(tmp_path: Path) -> None:
    f = tmp_path / "mix.toml"
    f.write_text("invalid_share = 0.1\n[classes]\nmarketing = 1.0\n", encoding="utf-8")
    mix = load_mix(f)
    assert mix.invalid_share == 0.1
    assert mix.classes == {"marketing": 1.0}
    assert mix.countries == Mix().countries


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("invalid_shar = 0.1\n", "invalid_shar"),
        ("cap_share = 1.5\n", "cap_share"),
        ("[classes]\nbulk = 1.0\n", "bulk"),
        ("[countries]\nusa = 1.0\n", "usa"),
        ("accounts = 'x'\n", "accounts"),
        ("not toml = = 1\n", "TOML"),
    ],
)
def test_a_bad_mix_file_names_the_key(tmp_path: Path, text: str, complaint: str) -> None:
    f = tmp_path / "mix.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(MixError, match=complaint):
        load_mix(f)


def test_the_shipped_example_network_yields_numbers() -> None:
    network = pytest.importorskip("router.core.network").example_network()
    if not (network / "network.json").exists():
        pytest.skip("no example network yet")
    plan = build_plan(network, 1)
    assert {"US", "GB", "DE", "IN"} <= set(plan.stems)


def test_regions_without_mobile_numbers_are_left_out(tmp_path: Path) -> None:
    """A deck prefix in a region with no mobile numbering (a satellite network, 001-881)
    gives no stems, and the plan has no empty region that traffic could pick."""
    network = write_network(tmp_path / "network")
    with (network / "decks" / "agg-one.csv").open("a", encoding="utf-8") as deck:
        deck.write("8816,Iridium,0.9000,USD,2025-01-01\n")
    plan = build_plan(network, 1)
    assert all(plan.stems.values()), [r for r, s in plan.stems.items() if not s]
    assert set(plan.prefix_counts) <= set(plan.stems)
    traffic = Traffic(plan, Mix(tail_share=1.0), 1, "t-")
    assert len({traffic.next(0).to for _ in range(2000)}) > 1000
