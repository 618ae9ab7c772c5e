"""OutcomeService (proto/stophub/v1/outcome.proto): the figures the regulator reports
(docs/outcomes.md), read-only, split by period in UTC or the zone the query names. The figures
are hub/service/outcomes.py's, the same `stophub report outcomes` draws."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from hub.domain.errors import InvalidArgument, PermissionDenied
from hub.service.outcomes import (
    WARNING_FIGURES,
    Figures,
    OutcomeRow,
    Period,
    QueryError,
    gather,
)
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from hub.service.wire import from_ts, ts
from hub.system.policy import find_zone
from stophub.v1 import outcome_pb2

PERIODS = {
    outcome_pb2.OUTCOME_PERIOD_UNSPECIFIED: Period.WHOLE,
    outcome_pb2.OUTCOME_PERIOD_DAY: Period.DAY,
    outcome_pb2.OUTCOME_PERIOD_WEEK: Period.WEEK,
    outcome_pb2.OUTCOME_PERIOD_MONTH: Period.MONTH,
}


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromMicroseconds(round(seconds * 1_000_000))
    return d


def figures_to_proto(f: Figures) -> outcome_pb2.OutcomeFigures:
    share = f.recovered_share
    return outcome_pb2.OutcomeFigures(
        reports=f.reports,
        lost_fen=f.lost_fen,
        first_layer_stops=f.first_layer_stops,
        stopped_first_layer_fen=f.stopped_first_layer_fen,
        downstream_stops=f.downstream_stops,
        stopped_downstream_fen=f.stopped_downstream_fen,
        freezes=f.freezes,
        frozen_fen=f.frozen_fen,
        returns=f.returns,
        returned_fen=f.returned_fen,
        recovered_share=share or 0.0,
        has_recovered_share=share is not None,
        first_stops=f.first_stops,
        first_stop_median=_duration(f.first_stop_median_seconds),
        first_stop_p90=_duration(f.first_stop_p90_seconds),
        leads=f.leads,
        leads_opened_case=f.leads_opened_case,
        leads_listed=f.leads_listed,
        leads_warned=f.leads_warned,
        leads_asked_for_more=f.leads_asked_for_more,
        leads_dismissed=f.leads_dismissed,
        leads_pending=f.leads_pending,
        **{name: getattr(f, name) for name in WARNING_FIGURES},
    )


def row_to_proto(row: OutcomeRow) -> outcome_pb2.OutcomeRow:
    return outcome_pb2.OutcomeRow(
        institution=row.institution,
        period_start_time=ts(row.start),
        period_end_time=ts(row.end),
        figures=figures_to_proto(row.figures),
    )


def get_outcome_figures(ctx: Context, body: outcome_pb2.OutcomeQuery) -> Message:
    """The regulator, the centre and auditors read every institution's figures; a bank or
    payment institution its own (the matrix gives it OWN)."""
    start = from_ts(body, "from_time", "from_time")
    end = from_ts(body, "to_time", "to_time")
    if start is None or end is None:  # from_ts refuses a missing one; this tells mypy
        raise InvalidArgument("from_time" if start is None else "to_time", "is required")
    if body.period not in PERIODS:
        raise InvalidArgument("period", f"{body.period} is no OutcomePeriod")
    zone_name = body.zone.strip() or "UTC"
    zone = find_zone(zone_name)
    if zone is None:
        raise InvalidArgument("zone", "is not an IANA time zone: give one such as Asia/Shanghai")
    institution = body.institution.strip() or None
    if ctx.access is Access.OWN:
        if institution is not None and institution != ctx.sender.code:
            raise PermissionDenied(
                "NOT_OWN_INSTITUTION",
                f"{ctx.sender.code} may read only its own outcome figures, not {institution}'s; "
                "the regulator, the anti-fraud centre and auditors read every institution's",
            )
        institution = ctx.sender.code
    try:
        report = gather(ctx.uow.reports, start, end, PERIODS[body.period], zone, institution)
    except QueryError as err:
        raise InvalidArgument("to_time", str(err)) from err
    except OverflowError as err:  # a period that would end after the year 9999
        raise InvalidArgument("to_time", "is too far in the future") from err
    return outcome_pb2.OutcomeReport(
        from_time=ts(start),
        to_time=ts(end),
        period=body.period,
        zone=str(zone),
        rows=[row_to_proto(r) for r in report.rows],
    )


GET_OUTCOME_FIGURES = Command(
    "GetOutcomeFigures", outcome_pb2.OutcomeQuery, get_outcome_figures, mutating=False
)
