"""The SDK sends a call that reached no hub again by itself, same bytes, and nothing else
(docs/failover.md, "Calls"). A real grpc.aio server on 127.0.0.1 plays a replica that fails
the first calls with UNAVAILABLE, as a killed replica's calls do, then answers as the hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import pytest

from adapters.sdk.client import HubClient, HubError
from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey
from stophub.v1 import case_pb2

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
METHOD = "/stophub.v1.CaseService/CreateReport"


@dataclass
class Replica:
    """Fails the first `failures` calls with `code`, then answers with a hub-signed Case."""

    hub_key: PrivateKey
    failures: int = 0
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    seen: list[bytes] = field(default_factory=list)

    async def create_report(
        self, request: case_pb2.CreateReportRequest, context: grpc.aio.ServicerContext
    ) -> case_pb2.CreateReportResponse:
        self.seen.append(request.envelope.SerializeToString())
        if len(self.seen) <= self.failures:
            await context.abort(self.code, "the replica went away")
        answer = seal_message(
            self.hub_key,
            sender="HUB",
            recipient="BANKA",
            message_id=f"hub-{request.envelope.message_id}",
            create_time=NOW,
            message=case_pb2.Case(case_id="C-1"),
        )
        return case_pb2.CreateReportResponse(envelope=answer)


@pytest.fixture
async def replica() -> AsyncIterator[tuple[Replica, str]]:
    state = Replica(PrivateKey.generate())
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        state.create_report,
        request_deserializer=case_pb2.CreateReportRequest.FromString,
        response_serializer=case_pb2.CreateReportResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("stophub.v1.CaseService", {"CreateReport": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield state, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def client_of(state: Replica, target: str, **options: int) -> HubClient:
    return HubClient(
        target,
        institution="BANKA",
        key=PrivateKey.generate(),
        hub_public_key=state.hub_key.public_key,
        witness=False,
        timeout=10,
        **options,
    )


def report() -> case_pb2.Report:
    return case_pb2.Report(description="a resend test")


async def test_a_call_no_hub_answered_is_sent_again_with_the_same_bytes(
    replica: tuple[Replica, str],
) -> None:
    state, target = replica
    state.failures = 2
    async with client_of(state, target) as client:
        case = await client.create_report(report(), message_id="m-1")
    assert case.case_id == "C-1"
    assert len(state.seen) == 3 and len(set(state.seen)) == 1  # one envelope, three times


async def test_it_gives_up_after_its_resends_with_a_transient_error(
    replica: tuple[Replica, str],
) -> None:
    state, target = replica
    state.failures = 10
    async with client_of(state, target, resends=1) as client:
        with pytest.raises(HubError) as raised:
            await client.create_report(report(), message_id="m-2")
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE and raised.value.transient
    assert len(state.seen) == 2


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT]
)
async def test_other_failures_are_the_applications_to_decide(
    replica: tuple[Replica, str], code: grpc.StatusCode
) -> None:
    state, target = replica
    state.failures, state.code = 1, code
    async with client_of(state, target) as client:
        with pytest.raises(HubError) as raised:
            await client.create_report(report(), message_id="m-3")
    assert raised.value.code is code
    assert len(state.seen) == 1


async def test_resends_zero_sends_once(replica: tuple[Replica, str]) -> None:
    state, target = replica
    state.failures = 1
    async with client_of(state, target, resends=0) as client:
        with pytest.raises(HubError):
            await client.create_report(report(), message_id="m-4")
    assert len(state.seen) == 1
    with pytest.raises(ValueError, match="resends must be 0 or more"):
        client_of(state, target, resends=-1)
