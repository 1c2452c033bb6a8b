"""Extraction of the mobile prefix -> operator data from phonenumbers."""

from __future__ import annotations

from carriers import numbering


def test_extracts_the_whole_dataset() -> None:
    ops = numbering.operator_prefixes()
    assert len(ops) > 28_000
    assert len({op.country_code for op in ops}) >= 200
    assert len({(op.region, op.operator) for op in ops}) >= 1_400
    assert all(op.prefix.startswith(str(op.country_code)) for op in ops)
    assert len(numbering.skipped_without_english()) < 100


def test_shared_country_codes_resolve_to_their_region() -> None:
    assert numbering.region_of("17583") == "LC"  # Saint Lucia, in the NANP (+1)
    assert numbering.region_of("17673") == "DM"  # Dominica
    assert numbering.region_of("447781") == "GG"  # Guernsey, under +44
    assert numbering.region_of("447700") == "GB"
    assert numbering.region_of("7700") == "KZ"  # Kazakhstan, under +7
    assert numbering.region_of("7900") == "RU"


def test_repairs_mojibake_and_keeps_good_names() -> None:
    assert numbering.repair_name("TelefÃ³nica") == "Telefónica"
    assert numbering.repair_name("Síminn") == "Síminn"
    assert numbering.repair_name(" EE  Limited ") == "EE Limited"
    assert not any("Ã" in op.operator for op in numbering.operator_prefixes())
