"""The journal with plain files: records round-trip, a record cut short ends the journal
and is cut off before appending, one writer at a time, ground truth over many journals,
and a host restoring its state from a journal (no broker)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from carriers import journal as jr
from carriers import network
from carriers.host import CarrierHost
from router.contracts import interconnect
from router.support.credentials import MqttAccess
from tests.carriers.carrier_helpers import truth
from tests.carriers.conftest import SmallNetwork


def report(
    n: int, carrier: str = "c1", status: interconnect.ReportStatus = "delivered"
) -> interconnect.DeliveryReport:
    return interconnect.DeliveryReport(
        id=f"m{n}", carrier=carrier, route="direct", status=status, ts=1_000 + n, price=0.01
    )


def accepted(n: int, carrier: str = "c1", lost: bool = False) -> jr.AcceptedItem:
    rep = None if lost else report(n, carrier)
    return jr.AcceptedItem(carrier, f"m{n}", 0.01, 900 + n, rep, 1_000 + n)


RECORDS: list[jr.Record] = [
    jr.Opened("h1", 42, 1_000),
    jr.Accepted([accepted(1), accepted(2, lost=True)], [("c1", "m0")]),
    jr.Published([jr.PublishedItem("c1", "m1", "delivered", 0)]),
    jr.Acked([("c1", "m1")]),
    jr.Dropped([("c1", "m7")]),
]


def write(path: Path, records: list[jr.Record]) -> bytes:
    data = b"".join(jr.encode(r) for r in records)
    path.write_bytes(data)
    return data


def test_records_round_trip() -> None:
    data = b"".join(jr.encode(r) for r in RECORDS)
    found = jr.scan(data)
    assert found.records == RECORDS
    assert (found.valid_bytes, found.damaged_bytes) == (len(data), 0)


def test_a_record_cut_short_or_damaged_ends_the_journal() -> None:
    data = b"".join(jr.encode(r) for r in RECORDS)
    last = len(jr.encode(RECORDS[-1]))
    for cut in (1, 5, 8, last - 1):
        found = jr.scan(data[:-cut])
        assert found.records == RECORDS[:-1]
        assert found.valid_bytes == len(data) - last
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF  # a damaged body fails its CRC
    assert jr.scan(bytes(flipped)).records == RECORDS[:-1]
    assert jr.scan(b"").records == []


def test_open_cuts_off_a_truncated_record_and_appends_after_the_last_whole_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    data = write(path, RECORDS)
    path.write_bytes(data[:-3])  # killed mid-write
    journal = jr.Journal.open(path)
    try:
        assert journal.restored.damaged_bytes == len(jr.encode(RECORDS[-1])) - 3
        assert journal.restored.acked == {("c1", "m1")}
        assert journal.last_host == "h1"
        journal.acked([("c1", "m2")])
    finally:
        journal.close()
    found = jr.read(path)
    assert found.damaged_bytes == 0
    assert found.records == [*RECORDS[:-1], jr.Acked([("c1", "m2")])]


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "j"
    first = jr.Journal.open(path)
    try:
        with pytest.raises(jr.JournalError, match="in use"):
            jr.Journal.open(path)
    finally:
        first.close()
    jr.Journal.open(path).close()  # the lock goes with the writer


def test_writer_appends_the_records_of_each_call(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = jr.Journal.open(path)
    try:
        journal.opened("h1")
        journal.accepted([accepted(1)], [])
        journal.published([report(1), report(2)])
        journal.dropped([("c1", "m9")])
        journal.published([report(3)], acked=[("c1", "m3")], dropped=[("c1", "m8")])
    finally:
        journal.close()
    records = jr.read(path).records
    assert [type(r) for r in records] == [
        jr.Opened,
        jr.Accepted,
        jr.Published,
        jr.Dropped,
        jr.Published,
        jr.Acked,
        jr.Dropped,
    ]
    opened = records[0]
    assert isinstance(opened, jr.Opened)
    assert (opened.host, opened.pid) == ("h1", os.getpid())
    assert records[2] == jr.Published(
        [jr.PublishedItem("c1", "m1", "delivered", 0), jr.PublishedItem("c1", "m2", "delivered", 0)]
    )


def test_replay_keeps_the_first_acceptance_and_the_latest_publication() -> None:
    state = jr.replay(
        [
            jr.Accepted([accepted(1)], []),
            jr.Accepted([accepted(1)], [("c1", "m1"), ("c1", "m1")]),
            jr.Published([jr.PublishedItem("c1", "m1", "delivered", 0)]),
            jr.Published([jr.PublishedItem("c1", "m1", "delivered", 2)]),
            jr.Published([jr.PublishedItem("c1", "m1", "delivered", 1)]),
        ]
    )
    assert list(state.accepted) == [("c1", "m1")]
    assert state.accepted_twice == {("c1", "m1")}
    assert state.repeats == 2
    assert state.published[("c1", "m1")].resent == 2


def test_ground_truth_over_several_journals(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    data = write(a, RECORDS)
    a.write_bytes(data + jr.encode(jr.Opened("h1", 43, 2_000))[:5])  # a restart, cut short
    write(
        b,
        [
            jr.Opened("h2", 7, 1_000),
            jr.Accepted([accepted(1, "agg"), accepted(3, "agg")], [("agg", "m1")] * 3),
            jr.Published([jr.PublishedItem("agg", "m3", "delivered", 1)]),
            jr.Opened("h2", 8, 3_000),
        ],
    )
    truth_ = jr.ground_truth([a, b])
    assert truth_.accepted == {
        "m1": frozenset({"c1", "agg"}),
        "m2": frozenset({"c1"}),
        "m3": frozenset({"agg"}),
    }
    assert truth_.reports_published == {("c1", "m1"): "delivered", ("agg", "m3"): "delivered"}
    assert truth_.reports_acked == frozenset({("c1", "m1")})
    assert truth_.repeats == 4
    assert truth_.reports_due == {
        ("c1", "m1"): "delivered",
        ("agg", "m1"): "delivered",
        ("agg", "m3"): "delivered",
    }
    assert truth_.reports_lost == frozenset({("c1", "m2")})
    assert truth_.reports_dropped == frozenset({("c1", "m7")})
    assert truth_.accepted_twice == frozenset()
    assert truth_.starts == 3
    assert truth_.damaged_bytes == 5
    assert jr.ground_truth([tmp_path / "absent"]).accepted == {}


def test_host_restores_idempotency_and_reschedules_unacked_reports(
    small_network: SmallNetwork, tmp_path: Path
) -> None:
    """Constructed on a journal, a host answers a repeat as a duplicate with the original
    price, holds the published unacked report for a re-send now, schedules the unpublished
    one, and forgets acked reports and other processes' carriers (the schedule itself is
    checked against the broker in test_carrier_reliability)."""
    directory = small_network([truth("c1")])
    wall = time.time_ns() // 1_000_000
    later = jr.AcceptedItem("c1", "m4", 0.02, wall, report(4), wall + 60_000)
    write(
        tmp_path / "j",
        [
            jr.Opened("old", 1, wall),
            jr.Accepted([accepted(1), accepted(2), accepted(3, lost=True), later], []),
            jr.Accepted([accepted(5, "elsewhere")], []),
            jr.Published([jr.PublishedItem("c1", "m1", "delivered", 0)]),
            jr.Published([jr.PublishedItem("c1", "m2", "delivered", 0)]),
            jr.Published([jr.PublishedItem("c1", "m2", "delivered", 1)]),
            jr.Acked([("c1", "m1")]),
        ],
    )
    endpoints, ledger = network.load_endpoints(directory, now=time.monotonic())
    journal = jr.Journal.open(tmp_path / "j")
    try:
        host = CarrierHost(
            endpoints, ledger, mqtt=MqttAccess("127.0.0.1", 1), host_id="h", journal=journal
        )
    finally:
        journal.close()
    again = endpoints["c1"].submit(
        interconnect.SubmitItem(id="m4", to="+447700900123", price=0.01), time.monotonic(), wall
    )
    assert again is not None
    assert (again.result.duplicate, again.result.price) == (True, 0.02)
    assert ("c1", "m2") in host.reports
    assert len(host.reports) == 1
    led = ledger["c1"]
    assert (led.reports_restored, led.reports_restored_unacked, led.reports_unacked) == (1, 1, 1)
    assert (led.accepted, led.repeats) == (0, 1)
    assert led.reports_pending == 1  # m4, not published yet


async def test_the_sender_id_survives_in_the_journal_and_a_restored_report(
    small_network: SmallNetwork, tmp_path: Path
) -> None:
    """A submit with a sender id, taken by the host's intake, is journalled with a report
    that echoes it; a host started again on the journal re-sends that report, sender and
    all."""
    directory = small_network([truth("c1")])
    endpoints, ledger = network.load_endpoints(directory, now=time.monotonic())
    journal = jr.Journal.open(tmp_path / "j")
    try:
        host = CarrierHost(
            endpoints, ledger, mqtt=MqttAccess("127.0.0.1", 1), host_id="h", journal=journal
        )
        batch = interconnect.SubmitBatch(
            "",
            interconnect.reply_topic("r"),
            [interconnect.SubmitItem(id="m1", to="+447700900123", carrier="c1", sender="ACME")],
        )
        host.intake.on_message(
            interconnect.host_submit_topic("h"), interconnect.SUBMIT_BATCH.encode(batch)
        )
    finally:
        journal.close()
    item = jr.read(tmp_path / "j").records[0]
    assert isinstance(item, jr.Accepted)
    assert item.items[0].report is not None
    assert item.items[0].report.sender == "ACME"
    write(
        tmp_path / "j",
        [item, jr.Published([jr.PublishedItem("c1", "m1", item.items[0].report.status, 0)])],
    )
    endpoints, ledger = network.load_endpoints(directory, now=time.monotonic())
    journal = jr.Journal.open(tmp_path / "j")
    try:
        again = CarrierHost(
            endpoints, ledger, mqtt=MqttAccess("127.0.0.1", 1), host_id="h", journal=journal
        )
    finally:
        journal.close()
    again.outbox.drain()  # publish what is due now: the restored re-send
    await again.outbox.pump()
    out = await again.outbox.next_batch()
    assert out.topic == interconnect.host_dlr_topic("h")
    assert [(r.id, r.sender, r.resent) for r in out.reports] == [("m1", "ACME", 1)]
    sent = interconnect.REPORT_BATCH.decode(out.payload).reports
    assert [(r.id, r.sender) for r in sent] == [("m1", "ACME")]
