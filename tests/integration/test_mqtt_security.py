"""The secured interconnect against the real test Mosquitto: who may connect, and what
each role may read and publish (the ACLs of ``router.tools.infra.credentials``).

Mosquitto answers a forbidden publish like any other (a PUBACK, with MQTT 3.1.1) and
drops it, and it may grant a forbidden subscription and then deliver nothing on it. So a
"never arrives" is checked after a marker that must arrive: published after the
forbidden messages, on the same connection where it can be (or once their PUBACKs came,
when the identity may publish nothing), and delivered to the same subscriber; after the
marker, ``QUIET_S`` more for stragglers. Every name is fresh (hosts, routers, payloads),
so that retained messages of other tests or earlier runs never count.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest

from router.contracts import interconnect as ic
from router.support.credentials import MqttAccess, tls_context
from router.support.infra_settings import InfraSettings
from tests.conftest import MqttIdentity
from tests.integration.harness import unique

pytestmark = pytest.mark.integration

WAIT_S = 10.0  # for what must arrive: generous, never asserted
QUIET_S = 1.0  # after the marker, for what must not arrive
CONNECT_S = 3.0

Seen = list[tuple[str, bytes]]


@pytest.fixture(autouse=True)
def secured(infra: InfraSettings) -> None:
    if not infra.security:
        pytest.skip("the test brokers run with SUPERNET_SECURITY=off")


def token() -> bytes:
    return f"tok-{uuid.uuid4().hex}".encode()


@asynccontextmanager
async def connected(access: MqttAccess, *topics: str, **kw: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(**(access.client_kwargs() | kw)) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def until_marker(client: aiomqtt.Client, marker: tuple[str, bytes]) -> Seen:
    """Every message ``client`` gets until ``marker`` (topic, payload), and ``QUIET_S``
    after it."""
    seen: Seen = []
    async with asyncio.timeout(WAIT_S):
        async for m in client.messages:
            assert isinstance(m.payload, bytes)
            seen.append((m.topic.value, m.payload))
            if seen[-1] == marker:
                break
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(QUIET_S):
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                seen.append((m.topic.value, m.payload))
    return seen


async def refusal(**kw: Any) -> aiomqtt.MqttError | None:
    """The error that connecting with these client options meets; None if it connects."""
    try:
        async with aiomqtt.Client(timeout=CONNECT_S, **kw):
            return None
    except aiomqtt.MqttError as e:
        return e


# ---- who may connect ------------------------------------------------------------------------


async def test_an_anonymous_connect_is_refused(mqtt_identity: MqttIdentity) -> None:
    access = mqtt_identity("admin", unique("test-sec-control"))
    assert await refusal(**access.client_kwargs()) is None  # the same broker takes an identity
    assert access.ca_file is not None
    error = await refusal(
        hostname=access.host, port=access.port, tls_context=tls_context(access.ca_file)
    )
    assert isinstance(error, aiomqtt.MqttCodeError), error
    assert "Not authorized" in str(error)


async def test_a_plain_text_connect_is_refused(mqtt_identity: MqttIdentity) -> None:
    """Right identity and password, but no TLS: the listener speaks only TLS."""
    access = mqtt_identity("admin", unique("test-sec-plain"))
    assert await refusal(**access.client_kwargs()) is None
    kw = access.client_kwargs()
    del kw["tls_context"]
    assert await refusal(**kw) is not None


async def test_a_wrong_password_is_refused(mqtt_identity: MqttIdentity) -> None:
    access = mqtt_identity("admin", unique("test-sec-password"))
    assert await refusal(**access.client_kwargs()) is None
    error = await refusal(**(access.client_kwargs() | {"password": access.password + "x"}))
    assert isinstance(error, aiomqtt.MqttCodeError), error
    assert "Not authorized" in str(error)


# ---- a carrier process (role carriers) --------------------------------------------------------


async def test_a_carrier_process_publishes_on_its_own_topics_only(
    mqtt_identity: MqttIdentity,
) -> None:
    """Its reports, directory, statuses and answers to a router arrive when they are its
    own, and never when the topic names another host."""
    me = mqtt_identity("carriers", unique("test-sec-host"))
    other = unique("test-sec-other")
    reply_to = ic.reply_topic(unique("test-sec-router"))

    def topics(host: str) -> list[str]:
        return [
            ic.host_dlr_topic(host),
            ic.directory_topic(host),
            ic.carrier_status_topic(host, "c1"),
            ic.host_status_topic(host),
            ic.result_topic(reply_to, host),
        ]

    watched = [*topics(me.username), *topics(other)]
    tok = token()
    async with (
        connected(mqtt_identity("admin", unique("test-sec-watch")), *watched) as watch,
        connected(me) as carrier,
    ):
        for topic in topics(other):
            await carrier.publish(topic, tok, qos=1)
        for topic in topics(me.username):  # its own, after the forged ones
            await carrier.publish(topic, tok, qos=1)
        seen = await until_marker(watch, (topics(me.username)[-1], tok))
    assert seen == [(topic, tok) for topic in topics(me.username)]


async def test_a_carrier_process_cannot_read_another_hosts_submits(
    mqtt_identity: MqttIdentity,
) -> None:
    me = mqtt_identity("carriers", unique("test-sec-host"))
    other = unique("test-sec-other")
    tok = token()
    own = ic.host_submit_topic(me.username)
    theirs = [ic.host_submit_topic(other), ic.host_dlr_ack_topic(other)]
    async with (
        connected(me, *theirs, own) as carrier,
        connected(mqtt_identity("admin", unique("test-sec-router"))) as router,
    ):
        for topic in theirs:
            await router.publish(topic, tok, qos=1)
        await router.publish(own, tok, qos=1)
        seen = await until_marker(carrier, (own, tok))
    assert seen == [(own, tok)]


async def test_a_carrier_process_subscribed_to_everything_gets_only_its_own(
    mqtt_identity: MqttIdentity,
) -> None:
    """``#`` brings it nothing but its own submits and acknowledgements: no other host's
    traffic, no router's results, no statuses (retained ones of other tests included)."""
    me = mqtt_identity("carriers", unique("test-sec-host"))
    other = unique("test-sec-other")
    own = [ic.host_submit_topic(me.username), ic.host_dlr_ack_topic(me.username)]
    others = [
        ic.host_submit_topic(other),
        ic.host_dlr_topic(other),
        ic.host_dlr_ack_topic(other),
        ic.carrier_status_topic(other, "c1"),
        ic.result_topic(ic.reply_topic(unique("test-sec-router")), other),
        f"test/{other}/anything",
    ]
    tok = token()
    # its own submit topic as well: the marker arrives even if `#` is refused outright
    async with (
        connected(me, "#", own[0]) as carrier,
        connected(mqtt_identity("admin", unique("test-sec-router"))) as router,
    ):
        for topic in [*others, own[1]]:
            await router.publish(topic, tok, qos=1)
        await router.publish(own[0], tok, qos=1)
        seen = await until_marker(carrier, (own[0], tok))
    assert {topic for topic, _ in seen} <= set(own), sorted({t for t, _ in seen} - set(own))
    assert (own[0], tok) in seen


# ---- a router (role router) -------------------------------------------------------------------


async def test_a_router_cannot_read_submits(mqtt_identity: MqttIdentity) -> None:
    name = unique("test-sec-router")
    me = mqtt_identity("router", name)
    host = unique("test-sec-host")
    mine = ic.result_topic(ic.reply_topic(name), host)
    tok = token()
    async with (
        connected(me, ic.host_submit_topic("+"), ic.results_subscription(name)) as router,
        connected(mqtt_identity("admin", unique("test-sec-other"))) as other,
    ):
        await other.publish(ic.host_submit_topic(host), tok, qos=1)
        await other.publish(mine, tok, qos=1)
        seen = await until_marker(router, (mine, tok))
    assert seen == [(mine, tok)]


async def test_a_router_cannot_publish_reports_statuses_directories_or_results(
    mqtt_identity: MqttIdentity,
) -> None:
    me = mqtt_identity("router", unique("test-sec-router"))
    host = unique("test-sec-host")
    forged = [
        ic.host_dlr_topic(host),
        ic.carrier_status_topic(host, "c1"),
        ic.host_status_topic(host),
        ic.directory_topic(host),
        ic.result_topic(ic.reply_topic(unique("test-sec-victim")), host),
    ]
    submit = ic.host_submit_topic(host)  # what a router may publish: the marker
    tok = token()
    async with (
        connected(mqtt_identity("admin", unique("test-sec-watch")), *forged, submit) as watch,
        connected(me) as router,
    ):
        for topic in forged:
            await router.publish(topic, tok, qos=1)
        await router.publish(submit, tok, qos=1)
        seen = await until_marker(watch, (submit, tok))
    assert seen == [(submit, tok)]


async def test_a_router_reads_its_own_results_only(mqtt_identity: MqttIdentity) -> None:
    name, victim = unique("test-sec-router"), unique("test-sec-victim")
    me = mqtt_identity("router", name)
    host = unique("test-sec-host")
    mine = ic.result_topic(ic.reply_topic(name), host)
    tok = token()
    subscriptions = (ic.results_subscription(victim), ic.results_subscription(name))
    async with (
        connected(me, *subscriptions) as router,
        connected(mqtt_identity("admin", unique("test-sec-carrier"))) as carrier,
    ):
        await carrier.publish(ic.result_topic(ic.reply_topic(victim), host), tok, qos=1)
        await carrier.publish(mine, tok, qos=1)
        seen = await until_marker(router, (mine, tok))
    assert seen == [(mine, tok)]


# ---- client ids ------------------------------------------------------------------------------


async def test_a_client_id_cannot_be_taken_over_by_another_identity(
    mqtt_identity: MqttIdentity,
) -> None:
    """A connects with B's username as its client id: Mosquitto uses A's username as the
    id instead, so B stays connected and keeps receiving. (B's own username on a second
    connection does take the id over: the check below would see that.)"""
    b = mqtt_identity("admin", unique("test-sec-b"))
    a = mqtt_identity("router", unique("test-sec-a"))
    topic = ic.host_submit_topic(unique("test-sec-host"))  # a router may publish there
    first, second = token(), token()
    async with (
        connected(b, topic) as victim,
        connected(a, identifier=b.username) as intruder,
    ):
        await intruder.publish(topic, first, qos=1)  # A is connected, and B hears it
        async with asyncio.timeout(WAIT_S):
            assert (await anext(aiter(victim.messages))).payload == first
        await asyncio.sleep(QUIET_S)  # a takeover's disconnect would have landed by now
        async with connected(mqtt_identity("admin", unique("test-sec-pub"))) as publisher:
            await publisher.publish(topic, second, qos=1)
        async with asyncio.timeout(WAIT_S):
            assert (await anext(aiter(victim.messages))).payload == second


async def test_the_same_identity_twice_takes_the_client_id_over(
    mqtt_identity: MqttIdentity,
) -> None:
    """The control for the test above: a second connection of B's own identity does
    disconnect B (the client id is the username), so a takeover would be seen."""
    b = mqtt_identity("admin", unique("test-sec-b"))
    topic = f"test/{unique('takeover')}"
    with pytest.raises(aiomqtt.MqttError):  # noqa: PT012 - B's connection is what fails
        async with connected(b, topic) as victim, connected(b):
            async with asyncio.timeout(WAIT_S):
                await anext(aiter(victim.messages))


# ---- an observer (role observer) --------------------------------------------------------------


async def test_an_observer_reads_statuses_and_directories_but_publishes_nothing(
    mqtt_identity: MqttIdentity,
) -> None:
    me = mqtt_identity("observer", unique("test-sec-observer"))
    host = unique("test-sec-host")
    readable = [ic.carrier_status_topic(host, "c1"), ic.host_status_topic(host),
                ic.directory_topic(host)]  # fmt: skip
    forged = [
        *readable,
        ic.host_submit_topic(host),
        ic.host_dlr_topic(host),
        ic.host_dlr_ack_topic(host),
        ic.result_topic(ic.reply_topic(unique("test-sec-router")), host),
        f"test/{host}/anything",
    ]
    announced, tok, marker = token(), token(), (f"test/{host}/marker", token())
    async with (
        connected(me, ic.CARRIER_STATUS_ALL, ic.HOST_STATUS_ALL, ic.DIRECTORY_ALL) as observer,
        connected(mqtt_identity("admin", unique("test-sec-watch")), *forged, marker[0]) as watch,
        connected(mqtt_identity("admin", unique("test-sec-host"))) as carrier,
    ):
        for topic in readable:
            await carrier.publish(topic, announced, qos=1)
        got: Seen = []
        async with asyncio.timeout(WAIT_S):
            async for m in observer.messages:
                assert isinstance(m.payload, bytes)
                if m.payload == announced:  # not the retained messages of other hosts
                    got.append((m.topic.value, m.payload))
                if len(got) == len(readable):
                    break
        assert sorted(got) == sorted((t, announced) for t in readable)
        for topic in forged:  # each acknowledged (PUBACK) before the next
            await observer.publish(topic, tok, qos=1)
        await carrier.publish(*marker, qos=1)  # after every forged one was taken and dropped
        seen = await until_marker(watch, marker)
    assert [s for s in seen if s[1] != announced] == [marker]
