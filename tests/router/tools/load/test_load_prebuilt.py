"""The load generator's records built ahead: the same requests as drawn one by one, with
the slice's ``created_at`` spliced in, on the partition of their key."""

from __future__ import annotations

import zlib

import msgspec
import pytest

from router.contracts.wire import REQUEST_DECODER
from router.tools.load import run
from router.tools.load.mix import Mix
from router.tools.load.numbers import NumberPlan
from router.tools.load.run import Prebuilt
from router.tools.load.traffic import Traffic


@pytest.mark.parametrize("chunk", [1_000_000, 7])  # all ahead; or rebuilt 7 at a time
def test_prebuilt_records_are_the_drawn_requests_with_created_at(
    tiny_plan: NumberPlan, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "PREBUILT", chunk)
    partitions = [0, 1, 2, 5]
    prebuilt = Prebuilt(Traffic(tiny_plan, Mix(), 9, "t-"), 50, partitions)
    one_by_one = Traffic(tiny_plan, Mix(), 9, "t-")
    got = prebuilt.take(20) + prebuilt.take(1) + prebuilt.take(100)
    assert len(got) == 50
    assert prebuilt.take(5) == []
    for id_, key, partition, head in got:
        expected = one_by_one.next(1_764_000_000_123)
        request = REQUEST_DECODER.decode(head + b"1764000000123}")
        assert request == expected
        assert id_ == expected.id
        assert key == expected.to.encode()
        assert partition == partitions[zlib.crc32(key) % len(partitions)]
    # created_at is the request's last field: a head never holds one of its own.
    assert all(b'"created_at"' not in head[:-14] for *_, head in got)
    assert msgspec.json.decode(got[0][3] + b"5}")["created_at"] == 5
