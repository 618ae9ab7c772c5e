"""The unary gRPC services: each RPC is one command of hub/service/commands/<proto file>.py,
run through the pipeline by the Runner (wire -> Hub.handle in a worker thread -> wire).
ListService (with its SyncList stream) is in hub/api/lists.py, DeliveryService in
hub/api/delivery.py."""

from __future__ import annotations

from typing import Any

from hub.api.runner import Runner
from hub.service.commands import (
    appeal,
    audit,
    case,
    institution,
    lead,
    order,
    outcome,
    returns,
    sla,
    warning,
)
from stophub.v1 import (
    appeal_pb2,
    appeal_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    case_pb2,
    case_pb2_grpc,
    institution_pb2,
    institution_pb2_grpc,
    lead_pb2,
    lead_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    outcome_pb2,
    outcome_pb2_grpc,
    returns_pb2,
    returns_pb2_grpc,
    sla_pb2,
    sla_pb2_grpc,
    trail_pb2,
    warning_pb2,
    warning_pb2_grpc,
)


class CaseServicer(case_pb2_grpc.CaseServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def CreateReport(
        self, request: case_pb2.CreateReportRequest, context: Any
    ) -> case_pb2.CreateReportResponse:
        return await self.r.run(case.CREATE_REPORT, request, context, case_pb2.CreateReportResponse)

    async def VerifyReport(
        self, request: case_pb2.VerifyReportRequest, context: Any
    ) -> case_pb2.VerifyReportResponse:
        return await self.r.run(case.VERIFY_REPORT, request, context, case_pb2.VerifyReportResponse)

    async def GetCase(
        self, request: case_pb2.GetCaseRequest, context: Any
    ) -> case_pb2.GetCaseResponse:
        return await self.r.run(case.GET_CASE, request, context, case_pb2.GetCaseResponse)

    async def ListCases(
        self, request: case_pb2.ListCasesRequest, context: Any
    ) -> case_pb2.ListCasesResponse:
        return await self.r.run(case.LIST_CASES, request, context, case_pb2.ListCasesResponse)

    async def GetCaseTrail(
        self, request: trail_pb2.GetCaseTrailRequest, context: Any
    ) -> trail_pb2.GetCaseTrailResponse:
        return await self.r.run(
            case.GET_CASE_TRAIL, request, context, trail_pb2.GetCaseTrailResponse
        )

    async def SetCaseGrade(
        self, request: case_pb2.SetCaseGradeRequest, context: Any
    ) -> case_pb2.SetCaseGradeResponse:
        return await self.r.run(
            case.SET_CASE_GRADE, request, context, case_pb2.SetCaseGradeResponse
        )


class DistributionServicer(returns_pb2_grpc.DistributionServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def StartDistribution(
        self, request: returns_pb2.StartDistributionRequest, context: Any
    ) -> returns_pb2.StartDistributionResponse:
        return await self.r.run(
            returns.START_DISTRIBUTION, request, context, returns_pb2.StartDistributionResponse
        )

    async def ObjectToDistribution(
        self, request: returns_pb2.ObjectToDistributionRequest, context: Any
    ) -> returns_pb2.ObjectToDistributionResponse:
        return await self.r.run(
            returns.OBJECT_TO_DISTRIBUTION,
            request,
            context,
            returns_pb2.ObjectToDistributionResponse,
        )

    async def DecideDistribution(
        self, request: returns_pb2.DecideDistributionRequest, context: Any
    ) -> returns_pb2.DecideDistributionResponse:
        return await self.r.run(
            returns.DECIDE_DISTRIBUTION, request, context, returns_pb2.DecideDistributionResponse
        )

    async def GetDistribution(
        self, request: returns_pb2.GetDistributionRequest, context: Any
    ) -> returns_pb2.GetDistributionResponse:
        return await self.r.run(
            returns.GET_DISTRIBUTION, request, context, returns_pb2.GetDistributionResponse
        )


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def IssueOrder(
        self, request: order_pb2.IssueOrderRequest, context: Any
    ) -> order_pb2.IssueOrderResponse:
        return await self.r.run(order.ISSUE_ORDER, request, context, order_pb2.IssueOrderResponse)

    async def AnswerOrder(
        self, request: order_pb2.AnswerOrderRequest, context: Any
    ) -> order_pb2.AnswerOrderResponse:
        return await self.r.run(order.ANSWER_ORDER, request, context, order_pb2.AnswerOrderResponse)

    async def SetAutoStopRule(
        self, request: order_pb2.SetAutoStopRuleRequest, context: Any
    ) -> order_pb2.SetAutoStopRuleResponse:
        return await self.r.run(
            order.SET_AUTO_STOP_RULE, request, context, order_pb2.SetAutoStopRuleResponse
        )


class InstitutionServicer(institution_pb2_grpc.InstitutionServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def GetInstitution(
        self, request: institution_pb2.GetInstitutionRequest, context: Any
    ) -> institution_pb2.GetInstitutionResponse:
        return await self.r.run(
            institution.GET_INSTITUTION, request, context, institution_pb2.GetInstitutionResponse
        )

    async def ListInstitutions(
        self, request: institution_pb2.ListInstitutionsRequest, context: Any
    ) -> institution_pb2.ListInstitutionsResponse:
        return await self.r.run(
            institution.LIST_INSTITUTIONS,
            request,
            context,
            institution_pb2.ListInstitutionsResponse,
        )


class SlaServicer(sla_pb2_grpc.SlaServiceServicer):
    """The SLA log, read-only: case clocks with their reminders, breaches and escalations."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def ListClocks(
        self, request: sla_pb2.ListClocksRequest, context: Any
    ) -> sla_pb2.ListClocksResponse:
        return await self.r.run(sla.LIST_CLOCKS, request, context, sla_pb2.ListClocksResponse)

    async def AcknowledgeBreach(
        self, request: sla_pb2.AcknowledgeBreachRequest, context: Any
    ) -> sla_pb2.AcknowledgeBreachResponse:
        return await self.r.run(
            sla.ACKNOWLEDGE_BREACH, request, context, sla_pb2.AcknowledgeBreachResponse
        )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """The audit log, read-only: entries, signed checkpoints and proofs (ADR 15)."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def ListAuditEntries(
        self, request: audit_pb2.ListAuditEntriesRequest, context: Any
    ) -> audit_pb2.ListAuditEntriesResponse:
        return await self.r.run(
            audit.LIST_AUDIT_ENTRIES, request, context, audit_pb2.ListAuditEntriesResponse
        )

    async def GetLogCheckpoint(
        self, request: audit_pb2.GetLogCheckpointRequest, context: Any
    ) -> audit_pb2.GetLogCheckpointResponse:
        return await self.r.run(
            audit.GET_LOG_CHECKPOINT, request, context, audit_pb2.GetLogCheckpointResponse
        )

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: Any
    ) -> audit_pb2.GetInclusionProofResponse:
        return await self.r.run(
            audit.GET_INCLUSION_PROOF, request, context, audit_pb2.GetInclusionProofResponse
        )

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: Any
    ) -> audit_pb2.GetConsistencyProofResponse:
        return await self.r.run(
            audit.GET_CONSISTENCY_PROOF,
            request,
            context,
            audit_pb2.GetConsistencyProofResponse,
        )


class OutcomeServicer(outcome_pb2_grpc.OutcomeServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def GetOutcomeFigures(
        self, request: outcome_pb2.GetOutcomeFiguresRequest, context: Any
    ) -> outcome_pb2.GetOutcomeFiguresResponse:
        return await self.r.run(
            outcome.GET_OUTCOME_FIGURES, request, context, outcome_pb2.GetOutcomeFiguresResponse
        )


class AppealServicer(appeal_pb2_grpc.AppealServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def FileAppeal(
        self, request: appeal_pb2.FileAppealRequest, context: Any
    ) -> appeal_pb2.FileAppealResponse:
        return await self.r.run(appeal.FILE_APPEAL, request, context, appeal_pb2.FileAppealResponse)

    async def DecideAppeal(
        self, request: appeal_pb2.DecideAppealRequest, context: Any
    ) -> appeal_pb2.DecideAppealResponse:
        return await self.r.run(
            appeal.DECIDE_APPEAL, request, context, appeal_pb2.DecideAppealResponse
        )

    async def GetAppeal(
        self, request: appeal_pb2.GetAppealRequest, context: Any
    ) -> appeal_pb2.GetAppealResponse:
        return await self.r.run(appeal.GET_APPEAL, request, context, appeal_pb2.GetAppealResponse)

    async def ListAppeals(
        self, request: appeal_pb2.ListAppealsRequest, context: Any
    ) -> appeal_pb2.ListAppealsResponse:
        return await self.r.run(
            appeal.LIST_APPEALS, request, context, appeal_pb2.ListAppealsResponse
        )


class LeadServicer(lead_pb2_grpc.LeadServiceServicer):
    """Leads (线索移送): members hand them over, the centre triages them (docs/leads.md)."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def SubmitLead(
        self, request: lead_pb2.SubmitLeadRequest, context: Any
    ) -> lead_pb2.SubmitLeadResponse:
        return await self.r.run(lead.SUBMIT_LEAD, request, context, lead_pb2.SubmitLeadResponse)

    async def TriageLead(
        self, request: lead_pb2.TriageLeadRequest, context: Any
    ) -> lead_pb2.TriageLeadResponse:
        return await self.r.run(lead.TRIAGE_LEAD, request, context, lead_pb2.TriageLeadResponse)

    async def AddLeadInformation(
        self, request: lead_pb2.AddLeadInformationRequest, context: Any
    ) -> lead_pb2.AddLeadInformationResponse:
        return await self.r.run(
            lead.ADD_LEAD_INFORMATION, request, context, lead_pb2.AddLeadInformationResponse
        )

    async def SetLeadGrade(
        self, request: lead_pb2.SetLeadGradeRequest, context: Any
    ) -> lead_pb2.SetLeadGradeResponse:
        return await self.r.run(
            lead.SET_LEAD_GRADE, request, context, lead_pb2.SetLeadGradeResponse
        )

    async def GetLead(
        self, request: lead_pb2.GetLeadRequest, context: Any
    ) -> lead_pb2.GetLeadResponse:
        return await self.r.run(lead.GET_LEAD, request, context, lead_pb2.GetLeadResponse)

    async def ListLeads(
        self, request: lead_pb2.ListLeadsRequest, context: Any
    ) -> lead_pb2.ListLeadsResponse:
        return await self.r.run(lead.LIST_LEADS, request, context, lead_pb2.ListLeadsResponse)


class WarningServicer(warning_pb2_grpc.WarningServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self.r = runner

    async def SendWarning(
        self, request: warning_pb2.SendWarningRequest, context: Any
    ) -> warning_pb2.SendWarningResponse:
        return await self.r.run(
            warning.SEND_WARNING, request, context, warning_pb2.SendWarningResponse
        )

    async def AcknowledgeWarning(
        self, request: warning_pb2.AcknowledgeWarningRequest, context: Any
    ) -> warning_pb2.AcknowledgeWarningResponse:
        return await self.r.run(
            warning.ACKNOWLEDGE_WARNING, request, context, warning_pb2.AcknowledgeWarningResponse
        )

    async def ReportWarningOutcome(
        self, request: warning_pb2.ReportWarningOutcomeRequest, context: Any
    ) -> warning_pb2.ReportWarningOutcomeResponse:
        return await self.r.run(
            warning.REPORT_WARNING_OUTCOME,
            request,
            context,
            warning_pb2.ReportWarningOutcomeResponse,
        )

    async def GetWarning(
        self, request: warning_pb2.GetWarningRequest, context: Any
    ) -> warning_pb2.GetWarningResponse:
        return await self.r.run(
            warning.GET_WARNING, request, context, warning_pb2.GetWarningResponse
        )

    async def ListWarnings(
        self, request: warning_pb2.ListWarningsRequest, context: Any
    ) -> warning_pb2.ListWarningsResponse:
        return await self.r.run(
            warning.LIST_WARNINGS, request, context, warning_pb2.ListWarningsResponse
        )

    async def SetWarningGrade(
        self, request: warning_pb2.SetWarningGradeRequest, context: Any
    ) -> warning_pb2.SetWarningGradeResponse:
        return await self.r.run(
            warning.SET_WARNING_GRADE, request, context, warning_pb2.SetWarningGradeResponse
        )
