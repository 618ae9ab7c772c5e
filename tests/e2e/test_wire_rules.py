"""The envelope rules over a real gRPC connection, with hand-crafted bytes."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import PrivateKey
from stophub.v1 import (
    case_pb2,
    case_pb2_grpc,
    delivery_pb2,
    envelope_pb2,
    order_pb2,
    order_pb2_grpc,
)
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import MULE, report, sign


def error_info(
    err: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo, delivery_pb2.Rejection, envelope_pb2.Envelope]:
    status = rpc_status.from_call(err)
    assert status is not None, "every refusal carries google.rpc.Status details"
    info = error_details_pb2.ErrorInfo()
    rejection = delivery_pb2.Rejection()
    signed = envelope_pb2.Envelope()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(envelope_pb2.Envelope.DESCRIPTOR):
            detail.Unpack(signed)
            rejection.ParseFromString(signed.body)
    return info, rejection, signed


async def create(network: Network, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    async with network.channel(env.sender) as channel:
        stub = case_pb2_grpc.CaseServiceStub(channel)
        response = await stub.CreateReport(case_pb2.CreateReportRequest(envelope=env))
        return response.envelope


async def refused(
    network: Network, env: envelope_pb2.Envelope, rpc: str = "CreateReport"
) -> grpc.aio.AioRpcError:
    # Over the sender's own certificate, so each test reaches the rule it is about (a
    # sender the registry does not know still gets a certificate from the network's CA).
    async with network.channel(env.sender) as channel:
        if rpc in ("CreateReport", "VerifyReport"):
            stub = case_pb2_grpc.CaseServiceStub(channel)
            request = getattr(case_pb2, f"{rpc}Request")(envelope=env)
        else:
            stub = order_pb2_grpc.OrderServiceStub(channel)  # type: ignore[assignment]
            request = getattr(order_pb2, f"{rpc}Request")(envelope=env)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, rpc)(request)
        return caught.value


async def audit_kinds(network: Network) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from hub.store.tables import audit_log

    with network.store.engine.connect() as conn:
        return [
            (r.kind, r.detail) for r in conn.execute(select(audit_log.c.kind, audit_log.c.detail))
        ]


async def count_cases(network: Network) -> int:
    from sqlalchemy import func, select

    from hub.store.tables import cases

    with network.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(cases)).scalar_one())


async def test_signed_report_is_answered_signed_by_the_hub(network: Network) -> None:
    now = network.clock.now()
    answer = await create(network, sign(network.keys["BANKA"], "BANKA", report(now), now))
    assert answer.sender == "HUB" and answer.recipient == "BANKA"
    assert verify_envelope(answer, network.hub_public_key)
    case = case_pb2.Case()
    case.ParseFromString(answer.body)
    assert case.state == case_pb2.CASE_STATE_REPORTED
    assert case.loss_fen == 5_000_000


async def test_replay_gets_the_original_answer_and_acts_once(network: Network) -> None:
    now = network.clock.now()
    env = sign(network.keys["BANKA"], "BANKA", report(now), now, message_id="r-1")
    first = await create(network, env)
    network.clock.advance(timedelta(seconds=30))
    second = await create(network, env)
    assert second.SerializeToString() == first.SerializeToString()
    assert await count_cases(network) == 1


async def test_modified_resend_is_refused(network: Network) -> None:
    now = network.clock.now()
    await create(network, sign(network.keys["BANKA"], "BANKA", report(now), now, message_id="r-2"))
    changed = sign(
        network.keys["BANKA"], "BANKA", report(now, (3_000_000, 2_500_000)), now, message_id="r-2"
    )
    err = await refused(network, changed)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    info, rejection, signed = error_info(err)
    assert info.reason == "MESSAGE_ID_REUSED"
    assert verify_envelope(signed, network.hub_public_key), "refusals are signed by the hub"
    assert rejection.message_id == "r-2"
    assert await count_cases(network) == 1
    assert any(k == "rejected" and "MESSAGE_ID_REUSED" in d for k, d in await audit_kinds(network))


@pytest.mark.parametrize(
    "tamper, reason",
    [
        ("body", "BAD_SIGNATURE"),
        ("amount_header", "BAD_SIGNATURE"),
        ("unsigned", "ENVELOPE_INCOMPLETE"),
        ("unknown_sender", "UNKNOWN_SENDER"),
        ("unknown_key", "UNKNOWN_KEY"),
        ("wrong_key", "BAD_SIGNATURE"),
    ],
)
async def test_bad_signatures_are_unauthenticated(
    network: Network, tamper: str, reason: str
) -> None:
    now = network.clock.now()
    key = network.keys["BANKA"]
    env = sign(key, "BANKA", report(now), now)
    if tamper == "body":
        env.body = env.body[:-1] + bytes([env.body[-1] ^ 1])
    elif tamper == "amount_header":
        env.message_id += "x"
    elif tamper == "unsigned":
        env.ClearField("signature")
    elif tamper == "unknown_sender":
        env = sign(key, "NOBANK", report(now), now)
    elif tamper == "unknown_key":
        env = sign(PrivateKey.generate(), "BANKA", report(now), now)
    elif tamper == "wrong_key":
        other = sign(network.keys["BANKB"], "BANKA", report(now), now)
        other.key_id = key.key_id
        env = other
    err = await refused(network, env)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert error_info(err)[0].reason == reason
    assert err.details(), "the message tells the engineer what to fix"
    assert await count_cases(network) == 0
    assert any(k == "rejected" for k, _ in await audit_kinds(network))


async def test_revoked_key_is_unauthenticated(network: Network) -> None:
    from hub.service.admin import Registry

    Registry(network.store, network.clock).revoke_key("BANKA", network.keys["BANKA"].key_id)
    now = network.clock.now()
    err = await refused(network, sign(network.keys["BANKA"], "BANKA", report(now), now))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(err)[0].reason == "KEY_REVOKED"


async def test_garbled_body_names_the_field(network: Network) -> None:
    now = network.clock.now()
    env = sign(network.keys["BANKA"], "BANKA", report(now), now)
    env2 = sign(network.keys["BANKA"], "BANKA", case_pb2.Verification(case_id="x"), now)
    env2.body_type = "stophub.v1.Report"  # type claims a report; re-sign so only the body is wrong
    from hub.crypto.envelope import seal

    garbled = seal(
        network.keys["BANKA"],
        sender="BANKA",
        recipient="HUB",
        message_id="garbled-1",
        create_time=now,
        body_type="stophub.v1.Report",
        body=b"\xff\xff\xff",
    )
    err = await refused(network, garbled)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err)[0].metadata["field"] == "body"
    wrong_type = seal(
        network.keys["BANKA"],
        sender="BANKA",
        recipient="HUB",
        message_id="wrong-type-1",
        create_time=now,
        body_type="stophub.v1.Verification",
        body=env.body,
    )
    err = await refused(network, wrong_type)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err)[0].metadata["field"] == "body_type"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: setattr(r.transactions[0], "amount_fen", -5), "transactions[0].amount_fen"),
        (lambda r: setattr(r.transactions[1], "amount_fen", 0), "transactions[1].amount_fen"),
        (
            lambda r: r.transactions[0].payee.ClearField("account_number"),
            "transactions[0].payee.account_number",
        ),
        (
            lambda r: setattr(r.transactions[0].payee, "institution_code", "NOSUCH"),
            "transactions[0].payee.institution_code",
        ),
        (
            lambda r: r.transactions[0].transaction_time.FromSeconds(4_102_444_800),
            "transactions[0].transaction_time",
        ),
    ],
)
async def test_invalid_reports_name_the_field(network: Network, mutate: object, field: str) -> None:
    now = network.clock.now()
    body = report(now)
    mutate(body)  # type: ignore[operator]
    err = await refused(network, sign(network.keys["BANKA"], "BANKA", body, now))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert error_info(err)[0].metadata["field"] == field
    assert field in err.details()
    assert await count_cases(network) == 0


async def test_an_order_from_a_bank_is_permission_denied(network: Network) -> None:
    now = network.clock.now()
    answer = await create(network, sign(network.keys["BANKA"], "BANKA", report(now), now))
    case = case_pb2.Case()
    case.ParseFromString(answer.body)
    instruction = order_pb2.OrderInstruction(case_id=case.case_id)
    instruction.stop.account.CopyFrom(MULE)
    instruction.stop.amount_fen = 100
    fact = instruction.stop.transactions.add(amount_fen=100)
    fact.transaction_time.FromDatetime(now)
    err = await refused(
        network, sign(network.keys["BANKA"], "BANKA", instruction, now), rpc="IssueOrder"
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err)[0].reason == "KIND_NOT_ALLOWED"


async def test_status_details_are_a_google_rpc_status(network: Network) -> None:
    now = network.clock.now()
    env = sign(network.keys["BANKA"], "BANKA", report(now), now)
    env.ClearField("signature")
    err = await refused(network, env)
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)  # type: ignore[arg-type]
    assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]


# ---- the status details, exactly as docs/errors.md lists them ----------------------------------

ERRORS_MD = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def documented_details() -> list[tuple[str, bool]]:
    """(type_url, sent only when the refusal names a field) of each row of the details table
    in docs/errors.md, in the documented order."""
    rows = re.findall(
        r"^\| \d+ \| `([^`]+)` \| .+ \| (always|only when the refusal names a field) \|$",
        ERRORS_MD.read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    assert rows, "docs/errors.md lists the details of a refusal"
    return [(url, when != "always") for url, when in rows]


def sent_details(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    return status_pb2.Status.FromString(raw)  # type: ignore[arg-type]


async def malformed(network: Network) -> grpc.aio.AioRpcError:
    async with network.channel("BANKA") as channel:
        call = channel.unary_unary("/stophub.v1.CaseService/CreateReport")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"\x0a\xff\xff")  # field 1 with a length running past the end
        return caught.value


async def test_refusal_details_carry_exactly_the_documented_type_urls(network: Network) -> None:
    documented = documented_details()
    assert [url for url, _ in documented] == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.BadRequest",
        "type.googleapis.com/stophub.v1.Envelope",
    ]
    now = network.clock.now()
    body = report(now)
    body.transactions[1].amount_fen = -1
    with_field = await refused(network, sign(network.keys["BANKA"], "BANKA", body, now))
    unsigned = sign(network.keys["BANKA"], "BANKA", report(now), now)
    unsigned.ClearField("signature")
    without_field = await refused(network, unsigned)
    cases = [
        (with_field, True, "BANKA"),
        (without_field, False, "BANKA"),
        (await malformed(network), True, "UNKNOWN"),  # it names the field `request`
    ]
    for err, names_field, recipient in cases:
        status = sent_details(err)
        assert (status.code, status.message) == (err.code().value[0], err.details())
        expected = [url for url, field_only in documented if names_field or not field_only]
        assert [d.type_url for d in status.details] == expected, err.details()
        signed = envelope_pb2.Envelope.FromString(status.details[-1].value)
        assert (signed.sender, signed.recipient) == ("HUB", recipient)
        assert signed.body_type == "stophub.v1.Rejection"
        assert verify_envelope(signed, network.hub_public_key)
        rejection = delivery_pb2.Rejection.FromString(signed.body)
        info = error_details_pb2.ErrorInfo.FromString(status.details[0].value)
        assert (rejection.code, rejection.reason) == (err.code().name, info.reason)
    assert error_info(with_field)[0].metadata["field"] == "transactions[1].amount_fen"
