"""The chaos benchmark's hostile mix: kinds of bad input a foreign client may send, each
with the outcome the engine owes it (a dead letter with its reason, a `failed` receipt
with its code, or `sent`), and `kcat_produce`, which sends them with kcat (librdkafka),
a client that is not supernet's: with security on, as the Kafka user ``producer`` over
SASL_SSL with PLAIN (Debian 12's kcat, librdkafka 2.0.2, cannot do SCRAM with Kafka 4;
``kcat_options``)."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from router.support.credentials import KafkaAccess

Outcome = Literal["dead", "failed", "sent"]


@dataclass(frozen=True, slots=True)
class Expect:
    outcome: Outcome
    code: int | None = None  # for "failed"
    reasons: frozenset[str] | None = None  # for "dead": acceptable supernet-reason labels

    def __str__(self) -> str:
        if self.outcome == "failed":
            return f"failed {self.code}"
        if self.outcome == "dead":
            return "dead letter" + (f" ({'|'.join(sorted(self.reasons))})" if self.reasons else "")
        return "sent"


@dataclass(frozen=True, slots=True)
class Ctx:
    """What the builders need: a tag for unique ids and some routable numbers."""

    tag: str
    numbers: tuple[str, ...]  # valid E.164 destinations the network routes
    now_ms: int

    def number(self, i: int) -> str:
        return self.numbers[i % len(self.numbers)]


Build = Callable[[Ctx, str], tuple[str | None, bytes | None]]  # (ctx, id) -> (id, value)


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    expect: Expect
    build: Build
    heavy: bool = False  # megabytes: only a couple of records of it


@dataclass(frozen=True, slots=True)
class Hostile:
    key: bytes  # bookkeeping: finds the record's offset in the requests topic
    value: bytes | None
    kind: str
    id: str | None  # the id a receipt would carry, when the record has a string id


DROP = object()
BODY = "Your code is 123456"
P1 = (
    b'{"id":"p1","to":"+447911123456","body":"x","created_at":1700000000000,'
    b'"validity_s":1e306}'
)  # issue 9's first poison pill, byte for byte


def _enc(fields: Mapping[str, object]) -> bytes:
    return json.dumps(
        {k: v for k, v in fields.items() if v is not DROP}, ensure_ascii=False,
        separators=(",", ":"),
    ).encode()  # fmt: skip


def req(**over: object) -> Build:
    """A valid request to a routable number with fields replaced (DROP removes one; a
    callable is called with the context and the record's id)."""

    def build(ctx: Ctx, id: str) -> tuple[str | None, bytes | None]:
        fields: dict[str, object] = {"id": id, "to": ctx.number(zlib.crc32(id.encode())),
                                     "body": BODY}  # fmt: skip
        for k, v in over.items():
            fields[k] = v(ctx, id) if callable(v) else v
        got = fields.get("id")
        return (got if isinstance(got, str) and got else None), _enc(fields)

    return build


def raw(value: bytes | None, with_id: bool = False) -> Build:
    """Bytes as they are (``with_id``: ``@ID@`` in them is replaced by the id)."""

    def build(ctx: Ctx, id: str) -> tuple[str | None, bytes | None]:
        if value is None or not with_id:
            return None, value
        return id, value.replace(b"@ID@", id.encode())

    return build


def patched(old: str, new: bytes, **over: object) -> Build:
    """A valid request whose encoded ``old`` text is replaced by raw bytes ``new``."""
    inner = req(**over)

    def build(ctx: Ctx, id: str) -> tuple[str | None, bytes | None]:
        got, value = inner(ctx, id)
        assert value is not None
        return got, value.replace(old.encode(), new, 1)

    return build


def _garbage(n: int, seed: int = 9) -> bytes:
    return random.Random(seed).randbytes(n)


def _letters(n: int) -> bytes:
    return (b"abcdefghijklmnopqrstuvwxyz0123456789" * (n // 36 + 1))[:n]


def _spaced(n: str) -> str:
    return f"{n[:3]} {n[3:7]} {n[7:]}"


def _dashed(n: str) -> str:
    return f"{n[:3]}-{n[3:7]}-{n[7:]}"


def _dotted(n: str) -> str:
    return f"{n[:3]}.{n[3:7]}.{n[7:]}"


def _parens(n: str) -> str:
    return f"{n[:3]} ({n[3:6]}) {n[6:]}"


def _expired(ms_ago: int) -> Callable[[Ctx, str], int]:
    return lambda ctx, id: ctx.now_ms - ms_ago


DEEP = 10_000
INVALID = frozenset({"invalid_field"})
MISSING = frozenset({"missing_field"})
NOT_JSON = frozenset({"not_json"})
BAD_UTF8 = frozenset({"bad_utf8"})
DEAD_I, DEAD_M, DEAD_J, DEAD_U = (Expect("dead", None, r) for r in (INVALID, MISSING, NOT_JSON,
                                                                     BAD_UTF8))  # fmt: skip
DEAD_ANY = Expect("dead")
SENT = Expect("sent")


def failed(code: int) -> Expect:
    return Expect("failed", code)


KINDS: tuple[Kind, ...] = (
    # Undecodable: a dead letter, the bytes unchanged, and no receipt.
    Kind("not-json", DEAD_J, raw(b"not json at all")),
    Kind("truncated-json", DEAD_J, raw(b'{"id":"@ID@","to":"+447911123456","body":"hi"', True)),
    Kind("binary-garbage", Expect("dead", None, NOT_JSON | BAD_UTF8), raw(_garbage(256))),
    Kind("trailing-garbage", DEAD_J, patched(BODY + '"}', BODY.encode() + b'"} xyz')),
    Kind(
        "two-objects", DEAD_J, raw(b'{"id":"@ID@","to":"+447911123456","body":"a"}{"id":"b"}', True)
    ),
    Kind(
        "bom-prefixed",
        DEAD_J,
        raw(b'\xef\xbb\xbf{"id":"@ID@","to":"+447911123456","body":"x"}', True),
    ),
    Kind("nan-literal", DEAD_J, patched('"max_price":0', b'"max_price":NaN', max_price=0)),
    Kind(
        "infinity-literal",
        DEAD_J,
        patched('"validity_s":1', b'"validity_s":Infinity', validity_s=1),
    ),
    Kind("empty-value", DEAD_J, raw(b"")),
    Kind("null-value", DEAD_J, raw(None)),
    Kind("json-array", DEAD_I, raw(b"[1,2,3]")),
    Kind("json-string", DEAD_I, raw(b'"hello"')),
    Kind("json-number", DEAD_I, raw(b"42")),
    Kind("json-null", DEAD_I, raw(b"null")),
    Kind("bad-utf8-body", DEAD_U, patched(BODY, b"\xff\xfe code")),
    Kind("bad-utf8-to", DEAD_U, patched("+", b"+\xc3\x28")),
    Kind("overlong-utf8", DEAD_U, patched(BODY, b"\xc0\xaf")),
    Kind("lone-surrogate", Expect("dead", None, NOT_JSON | BAD_UTF8), patched(BODY, b"\\ud800")),
    Kind("id-int", DEAD_I, req(id=42)),
    Kind("id-null", DEAD_I, req(id=None)),
    Kind("id-empty", DEAD_I, req(id="")),
    Kind("id-129-chars", DEAD_I, req(id=lambda ctx, id: id.ljust(129, "i"))),
    Kind("id-object", DEAD_I, req(id={"v": "x"})),
    Kind("to-int", DEAD_I, req(to=447911123456)),
    Kind("to-null", DEAD_I, req(to=None)),
    Kind("to-object", DEAD_I, req(to={"number": "+447911123456"})),
    Kind("body-list", DEAD_I, req(body=["x"])),
    Kind("body-null", DEAD_I, req(body=None)),
    Kind("body-object", DEAD_I, req(body={"text": "x"})),
    Kind("account-object", DEAD_I, req(account={"a": 1})),
    Kind("account-129-chars", DEAD_I, req(account="a" * 129)),
    Kind("from-65-chars", DEAD_I, req(**{"from": "f" * 65})),
    Kind("class-unknown", DEAD_I, req(**{"class": "spam"})),
    Kind("class-uppercase", DEAD_I, req(**{"class": "OTP"})),
    Kind("max-price-string", DEAD_I, req(max_price="cheap")),
    Kind("max-price-bool", DEAD_I, req(max_price=True)),
    Kind("max-price-negative", DEAD_I, req(max_price=-0.5)),
    Kind("max-price-1e400", DEAD_I, patched('"max_price":1', b'"max_price":1e400', max_price=1)),
    Kind("max-price-1e6", DEAD_I, req(max_price=1e6)),
    Kind("validity-string", DEAD_I, req(validity_s="60")),
    Kind("validity-negative", DEAD_I, req(validity_s=-60)),
    Kind("validity-zero", DEAD_I, req(validity_s=0)),
    Kind("validity-1e400", DEAD_I, patched('"validity_s":1', b'"validity_s":1e400', validity_s=1)),
    Kind("validity-1e306", DEAD_I, req(validity_s=1e306, created_at=1_700_000_000_000)),
    Kind("created-at-string", DEAD_I, req(created_at="yesterday")),
    Kind("created-at-float", DEAD_I, req(created_at=1.7e12 + 0.5)),
    Kind("created-at-negative", DEAD_I, req(created_at=-5)),
    Kind("created-at-2e20", DEAD_I, req(created_at=2 * 10**20)),
    Kind("missing-id", DEAD_M, req(id=DROP)),
    Kind("missing-to", DEAD_M, req(to=DROP)),
    Kind("missing-body", DEAD_M, req(body=DROP)),
    Kind("empty-object", DEAD_M, raw(b"{}")),
    Kind("deep-array", DEAD_ANY, raw(b"[" * DEEP + b"]" * DEEP)),
    Kind("deep-object", DEAD_ANY, raw(b'{"a":' * DEEP + b"1" + b"}" * DEEP)),
    Kind("deep-body", DEAD_ANY, patched(f'"{BODY}"', b"[" * DEEP + b"]" * DEEP)),
    Kind("garbage-5mb", DEAD_J, raw(b"{" + _letters(5_000_000) + b"}"), heavy=True),
    # Decodable but refused: a `failed` receipt with the code.
    Kind("to-too-short", failed(21211), req(to="+44123")),
    Kind("to-too-long", failed(21211), req(to="+4477009001234567")),
    Kind("to-no-plus", failed(21211), req(to="447911123456")),
    Kind("to-national", failed(21211), req(to="07911123456")),
    Kind("to-00-prefix", failed(21211), req(to="00447911123456")),
    Kind("to-plus-zero", failed(21211), req(to="+0447911123456")),
    Kind("to-letters", failed(21211), req(to="+44CALLNOW")),
    Kind("to-empty", failed(21211), req(to="")),
    Kind("to-plus-only", failed(21211), req(to="+")),
    Kind("to-fullwidth-digits", failed(21211), req(to="+\uff14\uff147911123456")),
    Kind("unknown-country", failed(21211), req(to="+999123456789")),
    Kind("to-6mb-u0080", failed(21211), req(to="\u0080" * 3_000_000), heavy=True),
    Kind("to-1mb-digits", failed(21211), req(to="+" + "7" * 1_000_000), heavy=True),
    Kind("body-empty", failed(21602), req(body="")),
    Kind("body-1601-gsm", failed(21617), req(body="a" * 1601)),
    Kind("body-1601-ucs2", failed(21617), req(body="\u0436" * 1601)),
    Kind("body-1mb", failed(21617), req(body="b" * 1_000_000), heavy=True),
    Kind("max-price-too-low", failed(21618), req(max_price=0.000001)),
    Kind("max-price-zero", failed(21618), req(max_price=0)),
    Kind("expired", failed(30036), req(created_at=_expired(3_600_000), validity_s=60)),
    Kind("expired-2023", failed(30036), req(created_at=1_700_000_000_000, validity_s=60)),
    # Odd but valid: routed and `sent` (numbers as people type them, normalised).
    Kind("control", SENT, req()),
    Kind("issue-spaced", SENT, req(to="+44 7911 123456")),
    Kind("to-spaced", SENT, req(to=lambda ctx, id: _spaced(ctx.number(len(id))))),
    Kind("to-dashed", SENT, req(to=lambda ctx, id: _dashed(ctx.number(len(id))))),
    Kind("to-dotted", SENT, req(to=lambda ctx, id: _dotted(ctx.number(len(id))))),
    Kind("to-parens", SENT, req(to=lambda ctx, id: _parens(ctx.number(len(id))))),
    Kind("unknown-fields", SENT, req(x_tracking={"a": [1, 2, {"b": None}]}, x_flag=True)),
    Kind("unknown-field-1mb", SENT, req(x_blob="z" * 1_000_000), heavy=True),
    Kind("id-128-chars", SENT, req(id=lambda ctx, id: id.ljust(128, "m"))),
    Kind("emoji-body", SENT, req(body="Your parcel \U0001f4e6 is on its way \u2705")),
    Kind("escaped-surrogates", SENT, patched(BODY, b"\\ud83d\\ude00 hi")),
    Kind("max-price-null", SENT, req(max_price=None)),
    Kind("validity-one-year", SENT, req(validity_s=366 * 24 * 3600)),
    Kind("whitespace-padded", SENT, patched("{", b" \n\t {")),
)
KIND_BY_NAME = {k.name: k for k in KINDS}
assert len(KIND_BY_NAME) == len(KINDS) >= 50


def hostile_records(ctx: Ctx, total: int, seed: int = 1) -> list[Hostile]:
    """``total`` records (about) over every kind, heavy kinds one or two, shuffled;
    issue 9's first poison pill (id ``p1``) once, byte for byte."""
    heavy = 1 if total < 2000 else 2
    light = [k for k in KINDS if not k.heavy]
    each = max(1, -(-(total - heavy * (len(KINDS) - len(light)) - 1) // len(light)))
    out = [Hostile(f"{ctx.tag}|issue-p1|0".encode(), P1, "issue-p1", "p1")]
    for k in KINDS:
        for i in range(heavy if k.heavy else each):
            rid, value = k.build(ctx, f"{ctx.tag}-{k.name}-{i}")
            out.append(Hostile(f"{ctx.tag}|{k.name}|{i}".encode(), value, k.name, rid))
    random.Random(seed).shuffle(out)
    return out


def expectation(kind: str) -> Expect:
    # p1's validity of 1e306 s is as out of range as 1e400: the contract's limit is a year.
    return DEAD_I if kind == "issue-p1" else KIND_BY_NAME[kind].expect


# -- the foreign client -----------------------------------------------------------------------

KEY_DELIM = "\x1f"
RECORD_DELIM = "\x1e<chaos-record>\x1e"


def kcat_options(access: KafkaAccess) -> list[str]:
    """kcat's flags to connect as ``access``: the bootstrap, and with security on the user
    and password over SASL PLAIN on TLS, trusting only the project CA."""
    argv = ["-b", access.bootstrap]
    if access.secure:
        options = {
            "security.protocol": "SASL_SSL" if access.ca_file is not None else "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": access.username,
            "sasl.password": access.password,
        }
        if access.ca_file is not None:
            options["ssl.ca.location"] = str(access.ca_file)
        argv += [arg for k, v in options.items() for arg in ("-X", f"{k}={v}")]
    return argv


async def kcat_produce(
    access: KafkaAccess, topic: str, records: Sequence[Hostile], scratch: Path,
    running: set[asyncio.subprocess.Process],
) -> None:  # fmt: skip
    """Produce with kcat (librdkafka), a client that is not supernet's, as ``access`` (the
    ``producer`` user, granted the topic): one invocation for the records with a value, one
    with -Z for those whose value is null."""
    kcat = shutil.which("kcat")
    if kcat is None:
        raise RuntimeError("kcat is not installed: run deploy/bootstrap.sh")
    for nulls in (False, True):
        batch = [h for h in records if (h.value is None) == nulls]
        if not batch:
            continue
        delim = RECORD_DELIM.encode()
        for h in batch:
            if KEY_DELIM.encode() in h.key or (h.value is not None and delim in h.value):
                raise ValueError(f"{h.kind}: a record contains kcat's delimiter")
        path = scratch / f"kcat-{secrets.token_hex(4)}.bin"
        data = b"".join(h.key + KEY_DELIM.encode() + (h.value or b"") + delim for h in batch)
        await asyncio.to_thread(_write, path, data)
        argv = [kcat, "-P", "-q", *kcat_options(access), "-t", topic, "-K", KEY_DELIM, "-D",
                RECORD_DELIM, "-X", "message.max.bytes=10000000", "-l", str(path)]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, *(["-Z"] if nulls else []), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        running.add(proc)
        try:
            async with asyncio.timeout(120):
                _, err = await proc.communicate()
        finally:
            running.discard(proc)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await asyncio.to_thread(path.unlink, True)
        if proc.returncode != 0:
            raise RuntimeError(f"kcat failed ({proc.returncode}): {err.decode()[-500:]}")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
