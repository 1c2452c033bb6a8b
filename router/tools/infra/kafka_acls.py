"""Kafka ACLs for one deployment of the pipeline: who may do what with its topics.

The broker runs KRaft's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found``
off, so a principal may do only what an ACL allows (``admin`` and the node itself are
super users). ``Pipeline`` names a deployment's topics and the fleet's group; ``grant``
allows, for it:

- ``producer``: write (and describe) the requests topic; nothing else;
- ``fleet`` (the routing workers): read the requests in the fleet's group; write the
  receipts and the dead letters; read and write its attempts log (read outside any group);
  create those topics if they are missing;
- ``receipts`` (a receipt consumer): read the receipts, in any group whose name starts
  with ``receipts-``; nothing else.

Nobody else joins the fleet's group or deletes a topic. ``supernet infra up`` grants the
default pipeline (``sms.*``, ``supernet-routers``); the demo, tests and benchmarks grant
their own topics, and ``revoke`` takes a grant back.

Sent with aiokafka's protocol layer (``CreateAcls`` / ``DeleteAcls`` v1, which Kafka 4.1
accepts): aiokafka has no ACL API, and a JVM per ``kafka-acls`` call would cost seconds
where one request costs a fifth of one. Hand-written, as a 10-line request subclass that
puts every binding in one request (aiokafka's own ``CreateAclsRequest`` carries one).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaTimeoutError, for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest,
)
from aiokafka.protocol.api import Request

from router.engine import kafka
from router.support.credentials import KafkaAccess


class Resource(IntEnum):  # org.apache.kafka.common.resource.ResourceType
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class Pattern(IntEnum):  # org.apache.kafka.common.resource.PatternType
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Op(IntEnum):  # org.apache.kafka.common.acl.AclOperation
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


ALLOW: Final = 3  # AclPermissionType
RECEIPT_GROUP_PREFIX: Final = "receipts-"

Binding = tuple[int, str, int, str, str, int, int]
"""(resource type, name, pattern type, principal, host, operation, permission)"""


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One deployment's topics and the fleet's consumer group."""

    requests: str = "sms.requests"
    receipts: str = "sms.receipts"
    dead_letter: str = "sms.dead-letter"
    attempts: str = ""  # empty: <requests>.attempts, as the worker's default
    group: str = "supernet-routers"

    def bindings(self) -> list[Binding]:
        t, g, lit = Resource.TOPIC, Resource.GROUP, Pattern.LITERAL
        attempts = self.attempts or f"{self.requests}.attempts"
        rules: list[tuple[str, Resource, str, Pattern, tuple[Op, ...]]] = [
            ("producer", t, self.requests, lit, (Op.WRITE, Op.DESCRIBE)),
            ("fleet", t, self.requests, lit, (Op.READ, Op.DESCRIBE, Op.CREATE)),
            ("fleet", g, self.group, lit, (Op.READ, Op.DESCRIBE)),
            ("fleet", t, self.receipts, lit, (Op.WRITE, Op.DESCRIBE, Op.CREATE)),
            ("fleet", t, self.dead_letter, lit, (Op.WRITE, Op.DESCRIBE, Op.CREATE)),
            ("fleet", t, attempts, lit, (Op.READ, Op.WRITE, Op.DESCRIBE, Op.CREATE)),
            ("receipts", t, self.receipts, lit, (Op.READ, Op.DESCRIBE)),
            ("receipts", g, RECEIPT_GROUP_PREFIX, Pattern.PREFIXED, (Op.READ, Op.DESCRIBE)),
        ]
        return [
            (rtype, name, pattern, f"User:{user}", "*", op, ALLOW)
            for user, rtype, name, pattern, ops in rules
            for op in ops
        ]


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, creations: list[Binding]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 31

    def __init__(self, filters: list[Binding]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._filters)


async def _client(admin: KafkaAccess) -> AIOKafkaClient:
    client = AIOKafkaClient(**admin.client_kwargs(), client_id="supernet-acls")
    await client.bootstrap()
    return client


async def grant(admin: KafkaAccess, pipeline: Pipeline, visible_s: float = 10.0) -> int:
    """Create the pipeline's ACLs (an identical existing one is kept); the count.

    Returns once the broker enforces them: the controller answers when the ACLs are in
    the metadata log, and the broker's authorizer applies them a moment later, so a
    client that starts at once could still be refused. DescribeAcls is answered from
    that authorizer: it is asked until every binding is there (``visible_s`` at most,
    then a ``KafkaTimeoutError``)."""
    wanted = pipeline.bindings()
    client = await _client(admin)
    try:
        node = client.get_random_node()
        response = await client.send(node, _CreateAcls(wanted))
        for binding, (code, message) in zip(wanted, response.creation_responses, strict=True):
            if code:
                raise for_code(code)(f"CreateAcls {binding}: {message}")
        deadline = time.monotonic() + visible_s
        missing = {_key(b) for b in wanted}
        while missing := missing - await _enforced(client, node):
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"{len(missing)} new ACLs not enforced after "
                                        f"{visible_s} s, e.g. {sorted(missing)[0]}")  # fmt: skip
            await asyncio.sleep(0.05)
    finally:
        await kafka.let_go(client.close)
    return len(wanted)


def _key(b: Binding) -> tuple[int, str, int, str, int]:
    rtype, name, ptype, principal, _host, op, _perm = b
    return rtype, name, ptype, principal, op


async def _enforced(client: AIOKafkaClient, node: int) -> set[tuple[int, str, int, str, int]]:
    """The ACLs the broker ``node``'s authorizer holds, as ``_key`` makes them."""
    r = await client.send(
        node, DescribeAclsRequest(Resource.ANY, None, Pattern.ANY, None, None, Op.ANY, 1)
    )
    if r.error_code:
        raise for_code(r.error_code)(f"DescribeAcls: {r.error_message}")
    return {
        (rtype, name, ptype, principal, op)
        for rtype, name, ptype, acls in r.resources
        for principal, _host, op, _perm in acls
    }


async def revoke(admin: KafkaAccess, pipeline: Pipeline) -> None:
    """Delete the pipeline's ACLs (those ``grant`` made)."""
    client = await _client(admin)
    try:
        response = await client.send(client.get_random_node(), _DeleteAcls(pipeline.bindings()))
    finally:
        await kafka.let_go(client.close)
    for code, message, _ in response.filter_responses:
        if code:
            raise for_code(code)(f"DeleteAcls: {message}")


async def describe(admin: KafkaAccess) -> list[tuple[str, str, str, str, str]]:
    """Every ACL: (principal, resource type, pattern type, name, operation)."""
    client = await _client(admin)
    try:
        held = await _enforced(client, client.get_random_node())
    finally:
        await kafka.let_go(client.close)
    return sorted(
        (principal, Resource(rtype).name, Pattern(ptype).name, name, Op(op).name)
        for rtype, name, ptype, principal, op in held
    )
