"""The ACLs a pipeline grants: each user gets only its own operations (the broker tests
prove the broker enforces them: tests/integration/test_kafka_security.py)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from router.support.credentials import CredentialsError, check_name
from router.tools.infra.kafka_acls import Op, Pattern, Pipeline, Resource


def granted(p: Pipeline) -> dict[str, set[tuple[str, str, str, str]]]:
    out: dict[str, set[tuple[str, str, str, str]]] = defaultdict(set)
    for rtype, name, pattern, principal, host, op, permission in p.bindings():
        assert host == "*"
        assert permission == 3  # ALLOW: nothing is granted by a DENY
        out[principal].add((Resource(rtype).name, name, Pattern(pattern).name, Op(op).name))
    return out


def test_each_user_gets_its_own_operations_and_nothing_else() -> None:
    p = Pipeline("r", "rc", "dl", "", "g")
    g = granted(p)
    assert set(g) == {"User:producer", "User:fleet", "User:receipts"}
    assert g["User:producer"] == {("TOPIC", "r", "LITERAL", "WRITE"),
                                  ("TOPIC", "r", "LITERAL", "DESCRIBE")}  # fmt: skip
    assert g["User:receipts"] == {
        ("TOPIC", "rc", "LITERAL", "READ"), ("TOPIC", "rc", "LITERAL", "DESCRIBE"),
        ("GROUP", "receipts-", "PREFIXED", "READ"), ("GROUP", "receipts-", "PREFIXED", "DESCRIBE"),
    }  # fmt: skip
    fleet = g["User:fleet"]
    assert ("TOPIC", "r.attempts", "LITERAL", "WRITE") in fleet  # the default attempts log
    assert ("GROUP", "g", "LITERAL", "READ") in fleet
    assert ("TOPIC", "r", "LITERAL", "WRITE") not in fleet  # it never writes requests
    assert ("TOPIC", "rc", "LITERAL", "READ") not in fleet  # nor reads receipts
    # nobody may delete, alter or act on the cluster
    ops = {op for grants in g.values() for _, _, _, op in grants}
    assert ops <= {"READ", "WRITE", "CREATE", "DESCRIBE"}


def test_the_attempts_topic_is_the_one_named() -> None:
    fleet = granted(Pipeline(attempts="custom"))["User:fleet"]
    assert ("TOPIC", "custom", "LITERAL", "READ") in fleet
    assert not any(name == "sms.requests.attempts" for _, name, _, _ in fleet)


@pytest.mark.parametrize("name", ["", "a/b", "x+", "#", "-lead", "a b", "é", "a" * 65])
def test_identity_names_that_would_break_topics_are_refused(name: str) -> None:
    with pytest.raises(CredentialsError, match="identity"):
        check_name(name)


@pytest.mark.parametrize("name", ["router", "router-w0", "eu.carriers_1", "A9", "a" * 64])
def test_identity_names_of_letters_digits_dots_underscores_and_dashes_are_taken(name: str) -> None:
    check_name(name)
