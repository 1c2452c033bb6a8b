"""The secured Kafka against the real test broker: who may connect, and what each user may
do with a pipeline's topics (the ACLs of ``router.tools.infra.kafka_acls``).

Each test runs on a fresh pipeline (topics ``sec.<tag>.*``, group ``sec-<tag>``), created
as ``admin`` and granted for the test, revoked and deleted after it. Every refusal is
checked against a control that succeeds on the same path (the right password, the node's
certificate, the user that is allowed), and, where the broker says so, by the error it
answers (``TopicAuthorizationFailedError``, ``GroupAuthorizationFailedError``, a
metadata error code, a TLS alert). A consumer that may not even describe a topic gets
nothing rather than an error: then it must get no record for ``QUIET_S`` while a
metadata request as the same user says "not authorized". Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import struct
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import errors
from aiokafka.admin import NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord, RecordMetadata

from benchmarks._chaos_hostile import kcat_options
from router.engine import kafka
from router.support.credentials import KafkaAccess, tls_context
from router.support.infra_settings import InfraSettings
from router.tools.infra.kafka_acls import Pipeline
from tests.conftest import Grant, KafkaUser
from tests.integration.kafka_wire import (
    REQUEST_MS,
    WAIT_S,
    T,
    api_versions_request,
    bounded,
    client_tls,
    metadata_over,
    round_trip,
    sasl,
)

pytestmark = pytest.mark.integration

QUIET_S = 2.0  # for what must not happen (no record arrives)
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31


@pytest.fixture(autouse=True)
def secured(infra: InfraSettings) -> None:
    if not infra.security:
        pytest.skip("the test brokers run with SUPERNET_SECURITY=off")


@pytest.fixture
async def pipeline(kafka_admin: KafkaAccess, kafka_grants: Grant) -> AsyncIterator[Pipeline]:
    """A fresh pipeline, its topics created (as admin) and granted; deleted at the end."""
    tag = uuid.uuid4().hex[:8]
    p = Pipeline(f"sec.{tag}.requests", f"sec.{tag}.receipts", f"sec.{tag}.dead-letter",
                 f"sec.{tag}.attempts", f"sec-{tag}")  # fmt: skip
    names = [p.requests, p.receipts, p.dead_letter, p.attempts]
    await kafka.ensure_topics(kafka_admin, [kafka.TopicSpec(t, 2) for t in names])
    await kafka_grants(p)
    try:
        yield p
    finally:
        await admin_call(kafka_admin, lambda a: a.delete_topics(names))


def fresh_topic(p: Pipeline, what: str) -> str:
    """A topic of this test nobody was granted."""
    return f"{p.requests.rsplit('.', 1)[0]}.{what}-{uuid.uuid4().hex[:6]}"


# ---- clients, each bounded in time --------------------------------------------------------


async def admin_call(access: KafkaAccess, call: Callable[[Any], Awaitable[T]]) -> T:
    """``call(admin client)`` with an admin client connected as ``access``."""
    client = kafka.admin_client(access)
    client._client._request_timeout_ms = REQUEST_MS  # start() and every request
    try:
        await bounded(client.start())
        return await bounded(call(client))
    finally:
        await client.close()


async def produce(
    access: KafkaAccess, topic: str, value: bytes, **overrides: Any
) -> RecordMetadata:
    """One record to ``topic`` as ``access`` (the project's producer settings)."""
    producer = kafka.producer(access, request_timeout_ms=REQUEST_MS, **overrides)
    try:  # stopped even when it cannot start (e.g. no producer id for this user)
        await bounded(producer.start())
        return await bounded(producer.send_and_wait(topic, value, key=b"k"))
    finally:
        await producer.stop()


async def consume(
    access: KafkaAccess, group: str | None, topic: str, *, assign: bool = False,
    wait_s: float = WAIT_S, commit: bool = False,
) -> list[ConsumerRecord]:  # fmt: skip
    """What a consumer as ``access`` gets from ``topic`` within ``wait_s`` (it stops at
    the first records): subscribed in ``group``, or (``assign``) assigned partition 0
    from its beginning. ``commit``: it commits what it got."""
    consumer = kafka.consumer(access, group, *([] if assign else [topic]),
                              request_timeout_ms=REQUEST_MS)  # fmt: skip
    got: list[ConsumerRecord] = []
    try:
        await bounded(consumer.start())
        if assign:
            tp = kafka.TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not got and loop.time() < deadline:
            batch = await bounded(consumer.getmany(timeout_ms=250), wait_s + 5)
            got = [r for records in batch.values() for r in records]
        if got and commit:
            await bounded(consumer.commit())
    finally:
        await consumer.stop()
    return got


async def metadata_error(access: KafkaAccess, topic: str) -> int:
    """The error code of ``topic`` in a metadata answer to ``access`` (0: it may see it)."""
    client = AIOKafkaClient(**access.client_kwargs(), request_timeout_ms=REQUEST_MS)
    try:
        await bounded(client.bootstrap())
        answer = await bounded(client.send(client.get_random_node(), MetadataRequest([topic])))
    finally:
        await client.close()
    [(code, name, *_)] = answer.topics
    assert name == topic
    return int(code)


async def values(admin: KafkaAccess, topic: str) -> list[bytes]:
    """Every value in ``topic`` now, read as admin. Bounded loosely: closing a client over
    TLS sometimes waits the TLS shutdown timeout (30 s) for the broker's close_notify."""
    return (await bounded(kafka.read_between(admin, topic), WAIT_S + 45)).values


async def topic_exists(admin: KafkaAccess, topic: str) -> bool:
    return topic in await admin_call(admin, lambda a: a.list_topics())


def marker(what: str) -> bytes:
    return f"{what}-{uuid.uuid4().hex}".encode()


# ---- who may connect ------------------------------------------------------------------------


async def test_an_anonymous_plain_text_connect_is_refused(
    infra: InfraSettings, kafka_admin: KafkaAccess
) -> None:
    control = await metadata_over(infra.kafka_port, **sasl(kafka_admin))
    assert [b[0] for b in control.brokers] == [1]  # the right identity is answered
    with pytest.raises(errors.KafkaConnectionError):
        await metadata_over(infra.kafka_port)
    # The listener answers a plain Kafka request with a TLS alert record (content type 21).
    answer = await round_trip(infra.kafka_port, api_versions_request(7), None)
    assert answer[:2] == b"\x15\x03", answer
    with pytest.raises(errors.KafkaConnectionError):  # the high-level client: no bootstrap
        await admin_call(KafkaAccess(infra.kafka_bootstrap), lambda a: a.list_topics())


async def test_tls_without_sasl_is_refused(infra: InfraSettings, kafka_admin: KafkaAccess) -> None:
    """TLS to the right CA, but no SASL: the broker serves no request."""
    assert kafka_admin.ca_file is not None
    tls_only = {"security_protocol": "SSL", "ssl_context": tls_context(kafka_admin.ca_file)}
    assert (await metadata_over(infra.kafka_port, **sasl(kafka_admin))).brokers
    with pytest.raises(errors.KafkaConnectionError):
        await metadata_over(infra.kafka_port, **tls_only)
    # SASL without TLS: the listener speaks only TLS.
    plain = sasl(kafka_admin, security_protocol="SASL_PLAINTEXT", ssl_context=None)
    with pytest.raises(errors.KafkaConnectionError):
        await metadata_over(infra.kafka_port, **plain)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_a_wrong_password_is_refused(
    infra: InfraSettings, kafka_access: KafkaUser, mechanism: str
) -> None:
    producer = kafka_access("producer")
    good = await metadata_over(infra.kafka_port, **sasl(producer, sasl_mechanism=mechanism))
    assert good.brokers
    for user, password in (("producer", producer.password + "x"), ("producer", ""),
                           (f"nobody-{uuid.uuid4().hex[:6]}", producer.password)):  # fmt: skip
        wrong = sasl(producer, sasl_mechanism=mechanism, sasl_plain_username=user,
                     sasl_plain_password=password)  # fmt: skip
        with pytest.raises(errors.SaslAuthenticationFailed, match=r"(?i)authentication failed"):
            await metadata_over(infra.kafka_port, **wrong)
    # The high-level client cannot bootstrap either.
    bad = KafkaAccess(producer.bootstrap, "producer", producer.password + "x", producer.ca_file)
    with pytest.raises(errors.KafkaConnectionError):
        await admin_call(bad, lambda a: a.list_topics())


async def test_the_controller_port_refuses_a_client_without_the_nodes_certificate(
    infra: InfraSettings,
) -> None:
    port = infra.kafka_controller_port
    answer = await round_trip(port, api_versions_request(11), client_tls(infra, "kafka-node"))
    assert answer[:8] == struct.pack(">ii", 256, 11)  # a response of this request's id
    # TLS 1.3: the handshake completes on the client's side; the broker's refusal of a
    # client without a certificate comes on the first read.
    with pytest.raises(ssl.SSLError, match=r"(?i)certificate"):
        await round_trip(port, api_versions_request(12), client_tls(infra))
    tls12 = client_tls(infra)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError, match=r"(?i)certificate"):
        await round_trip(port, api_versions_request(13), tls12)
    assert (await round_trip(port, api_versions_request(14), None))[:2] == b"\x15\x03"


def describe_quorum_request(correlation: int) -> bytes:
    """DescribeQuorum v0 (a flexible version) for the metadata log: a controller API that
    needs DESCRIBE on the cluster."""
    client, topic = b"supernet-test", b"__cluster_metadata"
    header = struct.pack(">hhih", 55, 0, correlation, len(client)) + client + b"\x00"
    partition = struct.pack(">i", 0) + b"\x00"
    body = b"\x02" + bytes([len(topic) + 1]) + topic + b"\x02" + partition + b"\x00" + b"\x00"
    return struct.pack(">i", len(header + body)) + header + body


async def describe_quorum_error(infra: InfraSettings, cert: str) -> int:
    host, port = "127.0.0.1", infra.kafka_controller_port
    reader, writer = await bounded(
        asyncio.open_connection(host, port, ssl=client_tls(infra, cert), server_hostname=host)
    )
    try:
        writer.write(describe_quorum_request(21))
        size = struct.unpack(">i", await bounded(reader.readexactly(4)))[0]
        answer = await bounded(reader.readexactly(size))
    finally:
        writer.transport.abort()  # no TLS close handshake: it is not tested
    correlation, _tags, code = struct.unpack(">ibh", answer[:7])
    assert correlation == 21
    return int(code)


async def test_another_certificate_of_the_ca_gets_no_controller_operation(
    infra: InfraSettings,
) -> None:
    """Mosquitto's certificate is signed by the same CA: it passes mutual TLS on the
    controller listener, but its principal is not the node's and may do nothing there."""
    assert await describe_quorum_error(infra, "kafka-node") == 0
    assert await describe_quorum_error(infra, "mosquitto") == CLUSTER_AUTHORIZATION_FAILED


# ---- producer: writes requests, nothing else ---------------------------------------------------


async def test_producer_writes_requests_and_no_other_topic(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess
) -> None:
    producer = kafka_access("producer")
    request = marker("request")
    await produce(producer, pipeline.requests, request)
    assert request in await values(kafka_admin, pipeline.requests)
    for topic in (pipeline.receipts, pipeline.dead_letter, pipeline.attempts):
        with pytest.raises(errors.TopicAuthorizationFailedError):
            await produce(producer, topic, marker("forged"))
        assert not await values(kafka_admin, topic)
    # Nor a topic nobody was granted, which writing to it does not create.
    other = fresh_topic(pipeline, "other")
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await produce(producer, other, marker("x"))
    assert not await topic_exists(kafka_admin, other)


async def test_producer_cannot_read_requests_nor_join_the_fleets_group(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess
) -> None:
    await produce(kafka_admin, pipeline.requests, marker("request"))
    assert await consume(kafka_access("fleet"), pipeline.group, pipeline.requests)  # control
    producer = kafka_access("producer")
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await consume(producer, None, pipeline.requests, assign=True)
    with pytest.raises(errors.GroupAuthorizationFailedError):
        await consume(producer, pipeline.group, pipeline.requests)
    with pytest.raises(errors.GroupAuthorizationFailedError):  # nor a receipt reader's group
        await consume(producer, f"receipts-{uuid.uuid4().hex[:6]}", pipeline.requests)


@pytest.mark.parametrize("user", ["producer", "receipts", "fleet"])
async def test_no_user_but_admin_deletes_or_creates_a_topic(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess, user: str
) -> None:
    access = kafka_access(user)
    deleted = await admin_call(access, lambda a: a.delete_topics([pipeline.requests]))
    assert [tuple(t[:2]) for t in deleted.topic_error_codes] == [
        (pipeline.requests, TOPIC_AUTHORIZATION_FAILED)
    ]
    assert await topic_exists(kafka_admin, pipeline.requests)
    new = fresh_topic(pipeline, "new")
    created = await admin_call(access, lambda a: a.create_topics([NewTopic(new, 1, 1)]))
    assert [tuple(t[:2]) for t in created.topic_errors] == [(new, TOPIC_AUTHORIZATION_FAILED)]
    assert not await topic_exists(kafka_admin, new)


async def test_admin_may_delete_and_create_topics(kafka_admin: KafkaAccess) -> None:
    """The control of the test above: the same calls succeed for admin."""
    topic = f"sec.{uuid.uuid4().hex[:8]}.admin"
    created = await admin_call(kafka_admin, lambda a: a.create_topics([NewTopic(topic, 1, 1)]))
    assert [tuple(t[:2]) for t in created.topic_errors] == [(topic, 0)]
    deleted = await admin_call(kafka_admin, lambda a: a.delete_topics([topic]))
    assert [tuple(t[:2]) for t in deleted.topic_error_codes] == [(topic, 0)]


# ---- receipts: reads receipts in groups receipts-*, nothing else -------------------------------


async def test_receipts_reads_receipts_in_a_receipts_group_and_commits(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess
) -> None:
    receipt = marker("receipt")
    await produce(kafka_admin, pipeline.receipts, receipt)
    group = f"receipts-{uuid.uuid4().hex[:6]}"
    got = await consume(kafka_access("receipts"), group, pipeline.receipts, commit=True)
    assert [r.value for r in got] == [receipt]
    committed = await admin_call(kafka_admin, lambda a: a.list_consumer_group_offsets(group))
    assert {(tp.topic, meta.offset) for tp, meta in committed.items() if meta.offset > 0} == {
        (pipeline.receipts, got[0].offset + 1)
    }


async def test_receipts_cannot_read_in_the_fleets_group_nor_read_requests(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess
) -> None:
    receipts = kafka_access("receipts")
    await produce(kafka_admin, pipeline.receipts, marker("receipt"))
    await produce(kafka_admin, pipeline.requests, marker("request"))
    with pytest.raises(errors.GroupAuthorizationFailedError):
        await consume(receipts, pipeline.group, pipeline.receipts)
    group = f"receipts-{uuid.uuid4().hex[:6]}"
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await consume(receipts, group, pipeline.requests)
    # Assigned the partition directly, outside any group: it may not even describe the
    # topic, so it gets nothing, and the broker says why.
    assert not await consume(receipts, None, pipeline.requests, assign=True, wait_s=QUIET_S)
    assert await metadata_error(receipts, pipeline.requests) == TOPIC_AUTHORIZATION_FAILED
    assert await metadata_error(receipts, pipeline.receipts) == 0  # the control
    assert await consume(receipts, None, pipeline.receipts, assign=True)  # and its records


async def test_receipts_cannot_write_receipts(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess
) -> None:
    receipts = kafka_access("receipts")
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await produce(receipts, pipeline.receipts, marker("forged"), enable_idempotence=False)
    # The project's producer is idempotent: a user that may write nowhere cannot even
    # get a producer id.
    with pytest.raises(errors.ClusterAuthorizationFailedError):
        await produce(receipts, pipeline.receipts, marker("forged"))
    assert not await values(kafka_admin, pipeline.receipts)


# ---- fleet: reads requests in its group, writes receipts ---------------------------------------


async def test_fleet_reads_requests_in_its_group_commits_and_writes_receipts(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess
) -> None:
    fleet = kafka_access("fleet")
    request = marker("request")
    await produce(kafka_admin, pipeline.requests, request)
    got = await consume(fleet, pipeline.group, pipeline.requests, commit=True)
    assert [r.value for r in got] == [request]
    committed = await admin_call(
        kafka_admin, lambda a: a.list_consumer_group_offsets(pipeline.group)
    )
    tp = kafka.TopicPartition(pipeline.requests, got[0].partition)
    assert committed[tp].offset == got[0].offset + 1
    receipt = marker("receipt")
    await produce(fleet, pipeline.receipts, receipt)
    await produce(fleet, pipeline.dead_letter, marker("dead"))
    assert receipt in await values(kafka_admin, pipeline.receipts)


async def test_fleet_cannot_read_receipts_nor_write_requests(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess
) -> None:
    fleet = kafka_access("fleet")
    await produce(kafka_admin, pipeline.receipts, marker("receipt"))
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await consume(fleet, None, pipeline.receipts, assign=True)
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await consume(fleet, pipeline.group, pipeline.receipts)
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await produce(fleet, pipeline.requests, marker("request"))


# ---- kcat (librdkafka, SASL PLAIN over TLS) as the producer ----------------------------------


@pytest.fixture(scope="module")
def kcat() -> str:
    found = shutil.which("kcat")
    if found is None:
        pytest.fail("kcat is not installed: run deploy/bootstrap.sh")
    return found


async def run_kcat(kcat: str, access: KafkaAccess, *argv: str, data: bytes = b""
                   ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    return await asyncio.to_thread(
        subprocess.run, [kcat, *kcat_options(access), *argv], input=data,
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip


async def test_kcat_as_producer_writes_requests_and_cannot_consume_them(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess, kcat: str
) -> None:
    producer = kafka_access("producer")
    request = marker("kcat-request")
    wrote = await run_kcat(kcat, producer, "-P", "-t", pipeline.requests, data=request + b"\n")
    assert wrote.returncode == 0, wrote.stderr
    assert request in await values(kafka_admin, pipeline.requests)
    read = await run_kcat(kcat, producer, "-C", "-t", pipeline.requests, "-o", "beginning", "-e")
    assert read.returncode != 0
    assert b"Topic authorization failed" in read.stderr, read.stderr
    assert request not in read.stdout
    # The control: admin's kcat reads it.
    control = await run_kcat(kcat, kafka_admin, "-C", "-t", pipeline.requests, "-o",
                             "beginning", "-e", "-q")  # fmt: skip
    assert control.returncode == 0, control.stderr
    assert request in control.stdout


async def test_a_forged_receipt_never_reaches_the_receipts_topic(
    pipeline: Pipeline, kafka_access: KafkaUser, kafka_admin: KafkaAccess, kcat: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A client that holds the producer's credentials writes a receipt of its own
    making: refused with kcat and with aiokafka; the receipts topic holds none of it."""
    producer = kafka_access("producer")
    forged = b'{"id":"forged-1","status":"delivered","ts":1}'
    wrote = await run_kcat(kcat, producer, "-P", "-t", pipeline.receipts, data=forged + b"\n")
    assert wrote.returncode != 0
    assert b"Topic authorization failed" in wrote.stderr, wrote.stderr
    with pytest.raises(errors.TopicAuthorizationFailedError):
        await produce(producer, pipeline.receipts, forged)
    # A receipt the fleet writes does arrive (the topic works), the forged ones do not.
    genuine = marker("genuine")
    await produce(kafka_access("fleet"), pipeline.receipts, genuine)
    assert await values(kafka_admin, pipeline.receipts) == [genuine]
