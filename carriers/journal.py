"""The carrier process's journal: an append-only file that outlives a SIGKILL.

``supernet carriers --journal FILE`` appends what the process did, as a real carrier's
database would keep it, so that a process killed and started again with the same file
answers a repeated message id as a duplicate (with the price billed the first time) and
publishes every report no router has acknowledged. It is also the ground truth of a
chaos run: ``ground_truth(paths)`` reads any number of journals.

Format
------
A sequence of records, each an 8-byte header and a msgpack body::

    uint32 big-endian  length of the body
    uint32 big-endian  CRC-32 of the body (zlib.crc32)
    body               msgpack array: [tag, fields...] (msgspec Structs, array_like)

Records (tags and fields, in order; ``key`` is ``[carrier, message id]``):

- ``opened``: ``host`` (the process's host id), ``pid``, ``ms`` (wall clock, ms since
  the Unix epoch): a process (re)opened the journal;
- ``accepted``: ``items`` and ``repeats``, one record per received submit batch that
  accepted or repeated anything. An item is ``[carrier, id, price, result_ms, report,
  report_due_ms]``: the billed price per segment, when its result was due (wall ms), and
  the delivery report it will send (``interconnect.DeliveryReport`` as a msgpack map, nil
  when the report is lost on purpose) with its due time (wall ms). ``repeats`` is the
  list of keys acknowledged as duplicates in that batch;
- ``published``: ``reports``, one record per report batch the broker took (after its
  PUBACK); each ``[carrier, id, status, resent]``;
- ``acked``: ``keys``, one record per acknowledgement batch, naming the reports the
  process held and so stopped re-sending (acks for reports it did not hold are left out);
- ``dropped``: ``keys``, reports given up because the unacknowledged store was full.

Writes use one ``os.write`` per batch on an ``O_APPEND`` descriptor (a ``published``
record may carry, in the same write, an ``acked`` record for reports acknowledged before
their PUBACK and a ``dropped`` one for reports given up meanwhile), with no fsync: the
page cache survives the process being killed (not the machine losing power). A record
whose header or body is incomplete or fails its CRC ends the journal: a process killed
mid-write leaves at most one such record, at the end, which reading skips and
``Journal.open`` cuts off before appending. One process writes a journal at a time
(``Journal.open`` takes an exclusive ``flock``; a killed process's lock goes with it).
The file grows for as long as it is used: there is no compaction.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from router.contracts import interconnect

Key = tuple[str, str]  # (carrier, message id)

_HEADER: Final = struct.Struct(">II")
# A body this large is no record of ours: the header is damaged.
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024


class JournalError(Exception):
    """The journal cannot be opened or written; the message says why."""


class AcceptedItem(msgspec.Struct, array_like=True, frozen=True):
    carrier: str
    id: str
    price: float
    result_ms: int
    report: interconnect.DeliveryReport | None = None
    report_due_ms: int = 0


class PublishedItem(msgspec.Struct, array_like=True, frozen=True):
    carrier: str
    id: str
    status: str
    resent: int


class Opened(msgspec.Struct, array_like=True, frozen=True, tag="opened"):
    host: str
    pid: int
    ms: int


class Accepted(msgspec.Struct, array_like=True, frozen=True, tag="accepted"):
    items: list[AcceptedItem]
    repeats: list[Key] = []


class Published(msgspec.Struct, array_like=True, frozen=True, tag="published"):
    reports: list[PublishedItem]


class Acked(msgspec.Struct, array_like=True, frozen=True, tag="acked"):
    keys: list[Key]


class Dropped(msgspec.Struct, array_like=True, frozen=True, tag="dropped"):
    keys: list[Key]


Record = Opened | Accepted | Published | Acked | Dropped

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Record)


def encode(record: Record) -> bytes:
    """One record, header included, as it is written to the file."""
    body = _encoder.encode(record)
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


@dataclass(frozen=True, slots=True)
class Scan:
    records: list[Record]
    valid_bytes: int  # the length of the journal up to its last whole record
    damaged_bytes: int  # what follows: a record cut short (or damaged), and the rest


def scan(data: bytes) -> Scan:
    """Decode a journal's bytes; the first incomplete or damaged record ends it."""
    records: list[Record] = []
    view = memoryview(data)
    offset, size = 0, len(data)
    while offset + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(view, offset)
        start = offset + _HEADER.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > size:
            break
        body = view[start:end]
        if zlib.crc32(body) != crc:
            break
        try:
            records.append(_decoder.decode(body))
        except msgspec.DecodeError:
            break
        offset = end
    return Scan(records, offset, size - offset)


def read(path: Path) -> Scan:
    """Scan a journal file (an absent file is an empty journal)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    return scan(data)


@dataclass(slots=True)
class Replay:
    """What one journal says, folded by report: the state a restarted process takes over."""

    accepted: dict[Key, AcceptedItem] = field(default_factory=dict)  # in journal order
    published: dict[Key, PublishedItem] = field(default_factory=dict)  # the latest publish
    acked: set[Key] = field(default_factory=set)
    dropped: set[Key] = field(default_factory=set)
    accepted_twice: set[Key] = field(default_factory=set)
    repeats: int = 0
    hosts: list[str] = field(default_factory=list)  # host id of every opening, in order
    damaged_bytes: int = 0

    def add(self, record: Record) -> None:
        match record:
            case Accepted(items=items, repeats=repeats):
                accepted = self.accepted
                for item in items:
                    key = (item.carrier, item.id)
                    if key in accepted:
                        self.accepted_twice.add(key)
                    else:
                        accepted[key] = item
                self.repeats += len(repeats)
            case Published(reports=reports):
                published = self.published
                for p in reports:
                    key = (p.carrier, p.id)
                    before = published.get(key)
                    if before is None or p.resent >= before.resent:
                        published[key] = p
            case Acked(keys=keys):
                self.acked.update(keys)
            case Dropped(keys=keys):
                self.dropped.update(keys)
            case Opened(host=host):
                self.hosts.append(host)


def replay(records: Iterable[Record], damaged_bytes: int = 0) -> Replay:
    state = Replay(damaged_bytes=damaged_bytes)
    for record in records:
        state.add(record)
    return state


class Journal:
    """The writer: one process appends to one journal file.

    ``Journal.open(path)`` locks the file, reads what is there (``restored``), cuts off a
    record a killed process left incomplete, and appends from then on. Call ``opened``
    once the process knows its host id, then one method per batch.
    """

    def __init__(self, path: Path, fd: int, restored: Replay) -> None:
        self.path = path
        self.restored = restored
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> Journal:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise JournalError(f"journal {path}: cannot open it: {e.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalError(
                    f"journal {path} is in use by another process; give each carrier "
                    "process its own journal"
                ) from None
            found = read(path)
            if found.damaged_bytes:
                os.ftruncate(fd, found.valid_bytes)
            return cls(path, fd, replay(found.records, found.damaged_bytes))
        except BaseException:
            os.close(fd)
            raise

    @property
    def last_host(self) -> str | None:
        """The host id of the process that opened this journal last, if any."""
        return self.restored.hosts[-1] if self.restored.hosts else None

    def append(self, *records: Record) -> None:
        """Write the records with one ``os.write``."""
        data = b"".join(encode(r) for r in records)
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (disk full?): finish it or fail
                written += os.write(self._fd, data[written:])
        except OSError as e:
            raise JournalError(f"journal {self.path}: write failed: {e.strerror}") from None

    def opened(self, host: str) -> None:
        self.append(Opened(host, os.getpid(), time.time_ns() // 1_000_000))

    def accepted(self, items: list[AcceptedItem], repeats: list[Key]) -> None:
        self.append(Accepted(items, repeats))

    def published(
        self,
        reports: Sequence[interconnect.DeliveryReport],
        acked: list[Key] | None = None,
        dropped: list[Key] | None = None,
    ) -> None:
        """A report batch the broker took; with the reports of it acknowledged while it
        was on its way, and those given up meanwhile (in the same write)."""
        items = [PublishedItem(r.carrier, r.id, r.status, r.resent) for r in reports]
        records: list[Record] = [Published(items)]
        if acked:
            records.append(Acked(acked))
        if dropped:
            records.append(Dropped(dropped))
        self.append(*records)

    def acked(self, keys: list[Key]) -> None:
        self.append(Acked(keys))

    def dropped(self, keys: list[Key]) -> None:
        self.append(Dropped(keys))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What the carrier processes did, over every journal given."""

    # message id -> every carrier that accepted it as new
    accepted: dict[str, frozenset[str]]
    # (carrier, id) -> status of the report published at least once
    reports_published: dict[Key, str]
    # reports a router acknowledged (and the carrier stopped re-sending)
    reports_acked: frozenset[Key]
    # duplicate acknowledgements: repeats of an id the carrier had accepted before
    repeats: int
    # (carrier, id) -> status of every report a carrier means to send (not lost on purpose)
    reports_due: dict[Key, str]
    # accepted messages whose report is lost on purpose (no router will ever see one)
    reports_lost: frozenset[Key]
    # reports given up because a process's unacknowledged store was full
    reports_dropped: frozenset[Key]
    # (carrier, id) accepted as new more than once: idempotency broken (should be empty)
    accepted_twice: frozenset[Key]
    # how many times a process opened a journal (starts and restarts)
    starts: int
    # bytes at the ends of journals that were cut short (killed mid-write) and skipped
    damaged_bytes: int


def ground_truth(paths: Iterable[Path]) -> GroundTruth:
    """Read journals (of one or many carrier processes, before or after restarts)."""
    accepted: dict[str, set[str]] = {}
    published: dict[Key, str] = {}
    acked: set[Key] = set()
    due: dict[Key, str] = {}
    lost: set[Key] = set()
    dropped: set[Key] = set()
    twice: set[Key] = set()
    repeats = starts = damaged = 0
    for path in paths:
        found = read(path)
        state = replay(found.records, found.damaged_bytes)
        for (carrier, message_id), item in state.accepted.items():
            carriers = accepted.setdefault(message_id, set())
            if carrier in carriers:
                twice.add((carrier, message_id))
            carriers.add(carrier)
            if item.report is None:
                lost.add((carrier, message_id))
            else:
                due[(carrier, message_id)] = item.report.status
        published.update((key, p.status) for key, p in state.published.items())
        acked |= state.acked
        dropped |= state.dropped
        twice |= state.accepted_twice
        repeats += state.repeats
        starts += len(state.hosts)
        damaged += state.damaged_bytes
    return GroundTruth(
        accepted={m: frozenset(c) for m, c in accepted.items()},
        reports_published=published,
        reports_acked=frozenset(acked),
        repeats=repeats,
        reports_due=due,
        reports_lost=frozenset(lost),
        reports_dropped=frozenset(dropped),
        accepted_twice=frozenset(twice),
        starts=starts,
        damaged_bytes=damaged,
    )
