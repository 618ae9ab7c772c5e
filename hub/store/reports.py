"""Read models for reports: rows as stored, read in SQL for the figures of
hub/service/slareport.py (`stophub report sla`) and hub/service/outcomes.py (`stophub report
outcomes`, OutcomeService), the metrics' clock counts
(hub/observability/metrics.py) and the demo's table of signed messages. `SqlUnitOfWork.reports`
is one over the unit of work's session, read-only."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, make_url, or_, select, true, type_coerce
from sqlalchemy.orm import Session

from hub.domain.cases import ExecutionStatus, OrderKind
from hub.domain.clocks import ClockState
from hub.domain.leads import FINAL, Lead
from hub.service.ports import (
    LeadHistoryRow,
    LogCheckpointRow,
    MoneyAnswerRow,
    ReportReceivedRow,
    WarningRow,
)
from hub.service.slareport import ClockRow, LogRow
from hub.store.tables import (
    UTCDateTime,
    audit_checkpoints,
    audit_log,
    audit_log_state,
    cases,
    clocks,
    fraud_transactions,
    leads,
    orders,
    sla_log,
    warnings,
)


def describe_database(url: str) -> str:
    """The database as a report names it: its URL without the password, a SQLite file by its
    absolute path (a relative one says nothing once the report has left the machine)."""
    if "://" not in url:  # a bare path is a SQLite file (hub.store.sql.normalise_url)
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"sqlite:///{Path(parsed.database).expanduser().resolve()}"
    return parsed.render_as_string(hide_password=True)


class SignedMessageRow(NamedTuple):
    """An audit entry that carries a signed envelope: received from a member or sent by the hub."""

    recorded_at: datetime
    kind: str
    detail: str
    payload: bytes


def _clock_row(r: Any) -> ClockRow:
    return ClockRow(
        clock_id=r.clock_id,
        case_id=r.case_id,
        order_id=r.order_id,
        kind=r.kind,
        responsible=r.responsible,
        started_at=r.started_at,
        deadline_at=r.deadline_at,
        state=str(getattr(r.state, "value", r.state)),
        breached=bool(r.breached),
        stopped_at=r.stopped_at,
        stopped_by=r.stopped_by,
    )


def _log_row(r: Any) -> LogRow:
    return LogRow(
        id=int(r.id),
        clock_id=r.clock_id,
        case_id=r.case_id,
        order_id=r.order_id,
        kind=r.kind,
        event=r.event,
        at=r.at,
        due_at=r.due_at,
        responsible=r.responsible,
        late_seconds=float(r.late_seconds),
        detail=r.detail,
    )


def _started_in(start: datetime, end: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        clocks.c.started_at >= type_coerce(start, UTCDateTime()),
        clocks.c.started_at < type_coerce(end, UTCDateTime()),
    )


# The open clocks by kind and breach, and the breached clocks by kind: each reads a range of
# its covering index (ix_clocks_state_kind_breached, ix_clocks_breached_kind), never the
# closed clocks of every case the hub has run, which a scrape every few seconds would read
# again and again.
COUNT_OPEN_CLOCKS = (
    select(clocks.c.kind, clocks.c.breached, func.count())
    .where(clocks.c.state == ClockState.OPEN)
    .group_by(clocks.c.kind, clocks.c.breached)
)
COUNT_BREACHED_CLOCKS = (
    select(clocks.c.kind, func.count())
    .where(clocks.c.breached == true())  # `= true`: PostgreSQL cannot use an index for IS TRUE
    .group_by(clocks.c.kind)
)


# The answers that moved money: what the outcome figures count (docs/outcomes.md).
DONE = (ExecutionStatus.EXECUTED, ExecutionStatus.PARTIALLY_EXECUTED)
BENEFICIARY = cases.alias("beneficiary")


def _between(column: Any, start: datetime, end: datetime) -> tuple[ColumnElement[bool], ...]:
    return (column >= type_coerce(start, UTCDateTime()), column < type_coerce(end, UTCDateTime()))


class SqlReports:
    """The SLA report's reader (hub.service.slareport.SlaReader), the outcome figures' reader
    (hub.service.ports.OutcomeReader) and the demo's signed messages."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def hold_snapshot(self) -> None:
        """Let every read of this unit of work see the database as of its first one, so the
        report's figures and the checkpoint it cites come from one moment (SQLite's read
        transaction does so already; PostgreSQL's default reads each statement afresh). Call
        before any other read."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})

    def clocks_started(self, start: datetime, end: datetime) -> list[ClockRow]:
        query = (
            select(clocks)
            .where(*_started_in(start, end))
            .order_by(clocks.c.started_at, clocks.c.clock_id)
        )
        return [_clock_row(r) for r in self.session.execute(query)]

    def log_of_clocks_started(self, start: datetime, end: datetime) -> list[LogRow]:
        ids = select(clocks.c.clock_id).where(*_started_in(start, end)).scalar_subquery()
        query = select(sla_log).where(sla_log.c.clock_id.in_(ids)).order_by(sla_log.c.id)
        return [_log_row(r) for r in self.session.execute(query)]

    def clock_span(self) -> tuple[datetime, datetime] | None:
        first, last = self.session.execute(
            select(func.min(clocks.c.started_at), func.max(clocks.c.started_at))
        ).one()
        # min() and max() take the column's type: aware UTC datetimes on either database.
        return None if first is None or last is None else (first, last)

    def latest_checkpoint(self) -> LogCheckpointRow | None:
        row = self.session.execute(
            select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc()).limit(1)
        ).one_or_none()
        if row is None:
            return None
        return LogCheckpointRow(row.tree_size, row.root_hash, row.signed_at, row.envelope)

    def audit_tree_size(self) -> int:
        size = self.session.execute(select(audit_log_state.c.tree_size)).scalar_one_or_none()
        return int(size or 0)

    def clocks_of_case(self, case_id: str) -> list[ClockRow]:
        query = (
            select(clocks)
            .where(clocks.c.case_id == case_id)
            .order_by(clocks.c.started_at, clocks.c.clock_id)
        )
        return [_clock_row(r) for r in self.session.execute(query)]

    def log_of_case(self, case_id: str) -> list[LogRow]:
        query = select(sla_log).where(sla_log.c.case_id == case_id).order_by(sla_log.c.id)
        return [_log_row(r) for r in self.session.execute(query)]

    def signed_messages(self, case_id: str) -> list[SignedMessageRow]:
        """The case's audit entries that carry a signed envelope, in the log's order."""
        query = (
            select(
                audit_log.c.recorded_at, audit_log.c.kind, audit_log.c.detail, audit_log.c.payload
            )
            .where(audit_log.c.case_id == case_id, audit_log.c.payload.is_not(None))
            .order_by(audit_log.c.id)
        )
        return [SignedMessageRow(*row) for row in self.session.execute(query)]

    def open_clocks_by_kind(self) -> list[tuple[str, bool, int]]:
        """(kind, breached, how many) of the open clocks."""
        return [(kind, bool(b), int(n)) for kind, b, n in self.session.execute(COUNT_OPEN_CLOCKS)]

    def breached_clocks_by_kind(self) -> list[tuple[str, int]]:
        """(kind, how many) of the clocks that ever breached, open or not."""
        return [(kind, int(n)) for kind, n in self.session.execute(COUNT_BREACHED_CLOCKS)]

    def leads_submitted(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[LeadHistoryRow]:
        query = select(Lead).where(*_between(leads.c.submitted_at, start, end))
        if institution is not None:
            query = query.where(leads.c.submitter == institution)
        out = []
        for lead in self.session.scalars(query):
            ended = lead.state in FINAL
            out.append(
                LeadHistoryRow(
                    lead.lead_id,
                    lead.submitter,
                    lead.submitted_at,
                    tuple((e.asked_at, e.answered_at) for e in lead.exchanges()),
                    lead.decided_at if ended else None,
                    (lead.outcome.value or "dismissed") if ended else "",
                )
            )
        return out

    def reports_received(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[ReportReceivedRow]:
        lost = (
            select(func.coalesce(func.sum(fraud_transactions.c.amount_fen), 0))
            .where(fraud_transactions.c.case_id == cases.c.case_id)
            .scalar_subquery()
        )
        query = select(
            cases.c.case_id, cases.c.reporting_institution, cases.c.created_at, lost
        ).where(*_between(cases.c.created_at, start, end))
        if institution is not None:
            query = query.where(cases.c.reporting_institution == institution)
        return [
            ReportReceivedRow(case_id, inst, at, int(fen))
            for case_id, inst, at, fen in self.session.execute(query)
        ]

    def money_answers(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[MoneyAnswerRow]:
        # Every holding stop of a case with one answered in the range: which stop is a case's
        # first, or an account's first, depends on the stops answered before the range too.
        stopped_in_range = (
            select(orders.c.case_id)
            .where(
                orders.c.kind == OrderKind.STOP,
                orders.c.result_status.in_(DONE),
                orders.c.amount_held_fen > 0,
                *_between(orders.c.answered_at, start, end),
            )
            .scalar_subquery()
        )
        counted_for = func.coalesce(
            BENEFICIARY.c.reporting_institution, cases.c.reporting_institution
        )
        query = (
            select(
                orders.c.order_id,
                orders.c.case_id,
                orders.c.kind,
                counted_for,
                orders.c.answered_at,
                orders.c.amount_held_fen,
                orders.c.returned_fen,
                orders.c.upstream_order_id,
                orders.c.account_institution,
                orders.c.account_number,
                orders.c.renews_order_id,
                cases.c.created_at,
            )
            .join(cases, cases.c.case_id == orders.c.case_id)
            .outerjoin(
                BENEFICIARY,
                and_(
                    orders.c.kind == OrderKind.RETURN,
                    orders.c.beneficiary_case_id != "",
                    BENEFICIARY.c.case_id == orders.c.beneficiary_case_id,
                ),
            )
            .where(
                orders.c.result_status.in_(DONE),
                or_(
                    and_(
                        orders.c.kind.in_((OrderKind.FREEZE, OrderKind.RETURN)),
                        *_between(orders.c.answered_at, start, end),
                    ),
                    and_(
                        orders.c.kind == OrderKind.STOP,
                        orders.c.amount_held_fen > 0,
                        orders.c.case_id.in_(stopped_in_range),
                    ),
                ),
            )
        )
        if institution is not None:
            query = query.where(counted_for == institution)
        return [
            MoneyAnswerRow(
                order_id=r[0],
                case_id=r[1],
                kind=str(getattr(r[2], "value", r[2])),
                institution=r[3],
                answered_at=r[4],
                held_fen=int(r[5]),
                returned_fen=int(r[6]),
                downstream=bool(r[7]),
                account=(r[8], r[9]),
                renews=bool(r[10]),
                case_received_at=r[11],
            )
            for r in self.session.execute(query)
        ]

    def warning_steps(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[WarningRow]:
        # Each step's own index: the three ranges, not a scan of every warning the hub keeps.
        query = select(
            warnings.c.warning_id,
            warnings.c.addressee,
            warnings.c.sent_at,
            warnings.c.amount_at_risk_fen,
            warnings.c.contact_by,
            warnings.c.acknowledged_at,
            warnings.c.outcome,
            warnings.c.outcome_at,
            warnings.c.outcome_by,
            warnings.c.loss_prevented_fen,
        ).where(
            or_(
                and_(*_between(warnings.c.sent_at, start, end)),
                and_(*_between(warnings.c.acknowledged_at, start, end)),
                and_(*_between(warnings.c.outcome_at, start, end)),
            )
        )
        if institution is not None:
            query = query.where(warnings.c.addressee == institution)
        return [
            WarningRow(
                r[0],
                r[1],
                r[2],
                int(r[3]),
                r[4],
                r[5],
                str(getattr(r[6], "value", r[6]) or ""),
                r[7],
                r[8],
                int(r[9]),
            )
            for r in self.session.execute(query)
        ]
