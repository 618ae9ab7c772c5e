"""The gate's rules for the people an envelope names (fields 10 and 11)."""

from __future__ import annotations

import pytest

from hub.domain.cases import CaseEvent, people_phrase
from hub.domain.errors import InvalidArgument
from hub.service.gate import check_people
from stophub.v1 import envelope_pb2


def env(operator: str = "", approver: str = "") -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(sender="BANKA", operator=operator, approver=approver)


@pytest.mark.parametrize(
    ("operator", "approver"),
    [("", ""), ("li.wei", ""), ("li.wei", "zhang.min"), ("x" * 64, "张" * 21), ("李 伟", "")],
)
def test_usable_people_pass(operator: str, approver: str) -> None:
    check_people(env(operator, approver))


@pytest.mark.parametrize(
    ("operator", "approver", "reason", "field"),
    [
        ("", "zhang.min", "APPROVER_WITHOUT_OPERATOR", "approver"),
        ("li.wei", "li.wei", "APPROVER_IS_OPERATOR", "approver"),
        ("x" * 65, "", "INVALID_PERSON", "operator"),
        ("张" * 22, "", "INVALID_PERSON", "operator"),
        ("li.wei", "x" * 65, "INVALID_PERSON", "approver"),
        ("li\twei", "", "INVALID_PERSON", "operator"),
        ("li.wei", "zhang\x7fmin", "INVALID_PERSON", "approver"),
        ("li\x85wei", "", "INVALID_PERSON", "operator"),
        ("li\x00wei", "", "INVALID_PERSON", "operator"),
    ],
)
def test_unusable_people_are_refused(operator: str, approver: str, reason: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_people(env(operator, approver))
    assert refused.value.reason == reason
    assert refused.value.field == field
    assert refused.value.code == "INVALID_ARGUMENT"


def test_people_phrase() -> None:
    assert people_phrase("", "") == ""
    assert people_phrase("li.wei", "") == " by li.wei"
    assert people_phrase("li.wei", "zhang.min") == " by li.wei (approved by zhang.min)"
    old = CaseEvent(1, None, "k", "BANKA", "s", operator=None, approver=None)  # type: ignore[arg-type]
    assert old.people() == ""
