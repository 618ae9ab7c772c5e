"""gRPC servicers: wire -> Hub.handle (in a worker thread) -> wire, refusals as statuses."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

from hub.api.errors import rejection_body, status_for
from hub.crypto.pki import institution_from_uris
from hub.domain.errors import DomainError
from hub.observability import logs
from hub.service import audit_api
from hub.service import handlers as h
from hub.service.handlers import Command, Hub
from stophub.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    case_pb2,
    case_pb2_grpc,
    envelope_pb2,
    institution_pb2,
    institution_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    returns_pb2,
    returns_pb2_grpc,
    sla_pb2,
    sla_pb2_grpc,
    trail_pb2,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)


def peer_institution(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The institution the connection's client certificate names in its SAN URI
    (`urn:stophub:institution:<CODE>`), or None: no TLS, no certificate, no such URI. gRPC
    lists the certificate's URI SANs, and only those, under `peer_uri`."""
    uris = context.auth_context().get("peer_uri", ())
    return institution_from_uris(u.decode("utf-8", "replace") for u in uris)


class Runner:
    """Runs the hub's synchronous handlers off the event loop and maps refusals."""

    def __init__(self, hub: Hub, executor: ThreadPoolExecutor) -> None:
        self.hub = hub
        self.executor = executor

    async def call(self, fn: Any, *args: Any) -> Any:
        # With the caller's context: log lines written on the worker thread carry the
        # request's ids (hub.observability.logs).
        work = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    async def abort(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        err: DomainError,
        envelope: envelope_pb2.Envelope | None,
    ) -> None:
        signed = self.hub.seal(
            envelope.sender if envelope is not None and envelope.sender else "UNKNOWN",
            rejection_body(err, envelope),
            self.hub.clock.now(),
        )
        code, message, trailers = status_for(err, envelope, signed)
        await context.abort(code, message, trailing_metadata=trailers)

    async def run(
        self,
        command: Command[Any],
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        response_type: type[R],
    ) -> R:
        envelope: envelope_pb2.Envelope = request.envelope
        with logs.scope(
            institution=envelope.sender,
            message_id=envelope.message_id,
            # Read from the body only if a line is written.
            case_id=functools.partial(logs.case_id_in, envelope.body, envelope.body_type),
        ):
            try:
                answer = await self.call(
                    self.hub.handle, command, envelope, peer_institution(context)
                )
            except DomainError as err:
                log.info(
                    "refused %s from %s/%s: %s %s",
                    command.name,
                    envelope.sender,
                    envelope.message_id,
                    err.code,
                    err.reason,
                )
                await self.abort(context, err, envelope)
                raise AssertionError("abort returns by raising") from err
        # types-protobuf (2026-11) no longer types a message's constructor fields.
        make = cast(Callable[..., R], response_type)
        return make(envelope=answer)


class CaseServicer(case_pb2_grpc.CaseServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def CreateReport(
        self, request: case_pb2.CreateReportRequest, context: Any
    ) -> case_pb2.CreateReportResponse:
        return await self.r.run(h.CREATE_REPORT, request, context, case_pb2.CreateReportResponse)

    async def VerifyReport(
        self, request: case_pb2.VerifyReportRequest, context: Any
    ) -> case_pb2.VerifyReportResponse:
        return await self.r.run(h.VERIFY_REPORT, request, context, case_pb2.VerifyReportResponse)

    async def GetCase(
        self, request: case_pb2.GetCaseRequest, context: Any
    ) -> case_pb2.GetCaseResponse:
        return await self.r.run(h.GET_CASE, request, context, case_pb2.GetCaseResponse)

    async def ListCases(
        self, request: case_pb2.ListCasesRequest, context: Any
    ) -> case_pb2.ListCasesResponse:
        return await self.r.run(h.LIST_CASES, request, context, case_pb2.ListCasesResponse)

    async def GetCaseTrail(
        self, request: trail_pb2.GetCaseTrailRequest, context: Any
    ) -> trail_pb2.GetCaseTrailResponse:
        return await self.r.run(h.GET_CASE_TRAIL, request, context, trail_pb2.GetCaseTrailResponse)


class DistributionServicer(returns_pb2_grpc.DistributionServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def StartDistribution(
        self, request: returns_pb2.StartDistributionRequest, context: Any
    ) -> returns_pb2.StartDistributionResponse:
        return await self.r.run(
            h.START_DISTRIBUTION, request, context, returns_pb2.StartDistributionResponse
        )

    async def ObjectToDistribution(
        self, request: returns_pb2.ObjectToDistributionRequest, context: Any
    ) -> returns_pb2.ObjectToDistributionResponse:
        return await self.r.run(
            h.OBJECT_TO_DISTRIBUTION, request, context, returns_pb2.ObjectToDistributionResponse
        )

    async def DecideDistribution(
        self, request: returns_pb2.DecideDistributionRequest, context: Any
    ) -> returns_pb2.DecideDistributionResponse:
        return await self.r.run(
            h.DECIDE_DISTRIBUTION, request, context, returns_pb2.DecideDistributionResponse
        )

    async def GetDistribution(
        self, request: returns_pb2.GetDistributionRequest, context: Any
    ) -> returns_pb2.GetDistributionResponse:
        return await self.r.run(
            h.GET_DISTRIBUTION, request, context, returns_pb2.GetDistributionResponse
        )


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def IssueOrder(
        self, request: order_pb2.IssueOrderRequest, context: Any
    ) -> order_pb2.IssueOrderResponse:
        return await self.r.run(h.ISSUE_ORDER, request, context, order_pb2.IssueOrderResponse)

    async def AnswerOrder(
        self, request: order_pb2.AnswerOrderRequest, context: Any
    ) -> order_pb2.AnswerOrderResponse:
        return await self.r.run(h.ANSWER_ORDER, request, context, order_pb2.AnswerOrderResponse)

    async def SetAutoStopRule(
        self, request: order_pb2.SetAutoStopRuleRequest, context: Any
    ) -> order_pb2.SetAutoStopRuleResponse:
        return await self.r.run(
            h.SET_AUTO_STOP_RULE, request, context, order_pb2.SetAutoStopRuleResponse
        )


class InstitutionServicer(institution_pb2_grpc.InstitutionServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def GetInstitution(
        self, request: institution_pb2.GetInstitutionRequest, context: Any
    ) -> institution_pb2.GetInstitutionResponse:
        return await self.r.run(
            h.GET_INSTITUTION, request, context, institution_pb2.GetInstitutionResponse
        )

    async def ListInstitutions(
        self, request: institution_pb2.ListInstitutionsRequest, context: Any
    ) -> institution_pb2.ListInstitutionsResponse:
        return await self.r.run(
            h.LIST_INSTITUTIONS, request, context, institution_pb2.ListInstitutionsResponse
        )


class SlaServicer(sla_pb2_grpc.SlaServiceServicer):
    """The SLA log, read-only: case clocks with their reminders, breaches and escalations."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def ListClocks(
        self, request: sla_pb2.ListClocksRequest, context: Any
    ) -> sla_pb2.ListClocksResponse:
        return await self.r.run(h.LIST_CLOCKS, request, context, sla_pb2.ListClocksResponse)


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """The audit log, read-only: entries, signed checkpoints and proofs (ADR 15)."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def ListAuditEntries(
        self, request: audit_pb2.ListAuditEntriesRequest, context: Any
    ) -> audit_pb2.ListAuditEntriesResponse:
        return await self.r.run(
            audit_api.LIST_AUDIT_ENTRIES, request, context, audit_pb2.ListAuditEntriesResponse
        )

    async def GetLogCheckpoint(
        self, request: audit_pb2.GetLogCheckpointRequest, context: Any
    ) -> audit_pb2.GetLogCheckpointResponse:
        return await self.r.run(
            audit_api.GET_LOG_CHECKPOINT, request, context, audit_pb2.GetLogCheckpointResponse
        )

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: Any
    ) -> audit_pb2.GetInclusionProofResponse:
        return await self.r.run(
            audit_api.GET_INCLUSION_PROOF, request, context, audit_pb2.GetInclusionProofResponse
        )

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: Any
    ) -> audit_pb2.GetConsistencyProofResponse:
        return await self.r.run(
            audit_api.GET_CONSISTENCY_PROOF,
            request,
            context,
            audit_pb2.GetConsistencyProofResponse,
        )
