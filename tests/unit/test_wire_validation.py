"""Regressions found by fuzzing the RPCs (tests/e2e/test_fuzz.py), one test per bug."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.api.decoding import Undecodable, tolerant
from hub.crypto.envelope import create_time_of, header_of
from hub.crypto.signing import signing_input
from hub.domain.errors import InvalidArgument, Unauthenticated
from hub.service import wire
from hub.service.commands.case import CREATE_REPORT, GET_CASE
from hub.service.commands.order import SET_AUTO_STOP_RULE
from hub.store import tables
from stophub.v1 import case_pb2, envelope_pb2, order_pb2
from tests.unit.test_handlers import MULE_B, World, report_body


def test_an_unparsable_request_becomes_a_refusal_not_a_grpc_unknown() -> None:
    # gRPC answered bytes that are not a request message with UNKNOWN and logged an ERROR.
    parse = tolerant(case_pb2.CreateReportRequest.FromString)
    bad = parse(b"\x0a\xff\xff\xff\xff\x0f")
    assert isinstance(bad, Undecodable)
    assert (bad.error.code, bad.error.reason) == ("INVALID_ARGUMENT", "MALFORMED_REQUEST")
    assert "stophub.v1.CreateReportRequest" in bad.error.message
    invalid_utf8 = parse(b"\x0a\x03\x0a\x01\xff")  # envelope.sender = b"\xff"
    assert isinstance(invalid_utf8, Undecodable)
    good = case_pb2.CreateReportRequest(envelope=envelope_pb2.Envelope(sender="BANKA"))
    assert parse(good.SerializeToString()) == good


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-(2**63), datetime.min.replace(tzinfo=UTC)),
        (-62_135_596_801, datetime.min.replace(tzinfo=UTC)),
        (2**63 - 1, datetime.max.replace(tzinfo=UTC)),
        (253_402_300_800, datetime.max.replace(tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_create_time_beyond_datetime_clamps_instead_of_overflowing(
    seconds: int, expected: datetime
) -> None:
    env = envelope_pb2.Envelope()
    env.create_time.seconds = seconds
    assert create_time_of(env) == expected


@pytest.mark.parametrize(
    ("seconds", "reason"), [(-(2**63), "ENVELOPE_EXPIRED"), (2**63 - 1, "ENVELOPE_FROM_FUTURE")]
)
def test_a_signed_envelope_from_year_minus_infinity_is_stale_not_a_crash(
    seconds: int, reason: str
) -> None:
    # A correctly signed envelope whose create_time lies beyond datetime crashed the freshness
    # check with OverflowError (gRPC UNKNOWN).
    world = World()
    env = world.seal("BANKA", report_body())
    env.create_time.seconds = seconds
    world.refuse(CREATE_REPORT, _resign(world, env), Unauthenticated, reason)


def _resign(world: World, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    env.signature = world.keys[env.sender].sign(signing_input(header_of(env), env.body))
    return env


def test_check_text_names_the_nested_field() -> None:
    body = report_body((MULE_B, 1_000), (MULE_B, 2_000))
    body.transactions[1].payee.holder_name = "Li\x00Si"
    with pytest.raises(InvalidArgument) as caught:
        wire.check_text(body)
    assert caught.value.field == "transactions[1].payee.holder_name"
    wire.check_text(report_body())  # a clean report passes


def test_a_nul_in_a_body_is_refused_before_it_reaches_the_store() -> None:
    # PostgreSQL text cannot hold NUL: a NUL in GetCase's case_id failed in the database
    # (psycopg DataError, gRPC UNKNOWN) while SQLite answered NOT_FOUND.
    world = World()
    env = world.seal("AFC", case_pb2.GetCaseBody(case_id="C\x00"))
    err = world.refuse(GET_CASE, env, InvalidArgument, "INVALID_FIELD", "case_id")
    assert "NUL" in err.message


def test_a_nul_in_the_envelope_header_is_refused_and_audited_without_it() -> None:
    world = World()
    env = world.seal("BANKA", report_body(), message_id="m\x00-1")
    before = len(world.store.audit)
    with pytest.raises(InvalidArgument) as caught:
        world.hub.handle(CREATE_REPORT, env)
    assert caught.value.field == "message_id"
    (row,) = world.store.audit[before:]
    assert row.kind == "rejected" and row.message_id == "m\ufffd-1"


def test_storable_replaces_nul_and_cuts_to_the_column() -> None:
    assert wire.storable("A\x00B" * 30, 64) == ("A\ufffdB" * 30)[:64]
    assert wire.storable("BANKA", 64) == "BANKA"


def test_text_longer_than_its_column_is_refused_by_name() -> None:
    # PostgreSQL failed a 10 000-character rule_id in the flush (StringDataRightTruncation,
    # gRPC UNKNOWN) while SQLite stored it.
    world = World()
    too_long = order_pb2.AutoStopRule(rule_id="R" * 65, enabled=True, max_amount_fen=1)
    world.refuse(
        SET_AUTO_STOP_RULE, world.seal("AFC", too_long), InvalidArgument, "INVALID_FIELD", "rule_id"
    )
    fits = order_pb2.AutoStopRule(rule_id="R" * 64, enabled=True, max_amount_fen=1)
    assert world.send(SET_AUTO_STOP_RULE, "AFC", fits)


def test_text_limits_are_those_of_the_store_columns() -> None:
    columns = {
        "stophub.v1.FraudTransaction.transaction_reference": tables.fraud_transactions.c.reference,
        "stophub.v1.OnwardTransfer.transaction_reference": tables.onward_transfers.c.reference,
        "stophub.v1.AutoStopRule.rule_id": tables.auto_stop_rules.c.rule_id,
        "stophub.v1.FreezeInstruction.filed_case_number": tables.orders.c.filed_case_number,
        "stophub.v1.FreezeInstruction.approving_authority": tables.orders.c.approving_authority,
    }
    assert {name: col.type.length for name, col in columns.items()} == wire.TEXT_LIMITS
