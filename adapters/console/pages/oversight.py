"""The regulator's and auditors' desks, read-only: the SLA figures and the SLA report, both
made from what the hub answers over gRPC (ListClocks carries every clock with its SLA log, so
`stophub report sla`'s figures and drawing, hub/service/slareport.py and hub/render/report.py,
apply unchanged), and the audit log's latest signed checkpoint: its signature checked with the
hub keys this console holds, kept in the console's database, and proved consistent with the
largest good checkpoint kept before it (RFC 9162 consistency proof). A checkpoint that is
smaller than one kept (ROLLBACK), or whose tree is not an extension of the kept one (FORK), is
a red finding on the page, kept as evidence; never an error page."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.console import actions
from adapters.console.actions import Refusal
from adapters.console.models import KeptCheckpoint
from adapters.console.pages.common import state_name, ts
from adapters.console.web import Desk, desk_of, gettext_for, page, refuse, render, viewer_of
from adapters.sdk import HubError, HubSignatureError
from hub.domain.merkle import verify_consistency
from hub.render.report import render_html
from hub.render.wording import display_zone, duration, set_display_zone
from hub.service.slareport import (
    Checkpoint,
    ClockRow,
    LogRow,
    SlaReport,
    SummaryRow,
    clock_name,
    day_start,
    period,
    summarise,
)
from stophub.v1 import sla_pb2

# Verdicts on a checkpoint; the first two make it a checkpoint later ones are proved against.
GOOD = ("first", "consistent")
RED = ("rollback", "fork", "signature", "unproven")


def _not_here(request: Request) -> Response | None:
    if desk_of(request).oversight:
        return None
    return refuse(
        request,
        404,
        gettext_for(request)("This page is on the regulator's and auditors' consoles only."),
    )


async def _all_clocks(desk: Desk) -> list[sla_pb2.ClockView]:
    return await desk.link.call(lambda c: c.list_clocks(page_size=200))


def report_rows(views: list[sla_pb2.ClockView]) -> tuple[list[ClockRow], list[LogRow]]:
    """The hub's clocks and SLA log as `stophub report sla` reads them from its database."""
    clocks: list[ClockRow] = []
    log: list[LogRow] = []
    for v in views:
        started, deadline = ts(v.start_time), ts(v.deadline_time)
        if started is None or deadline is None:
            continue
        clocks.append(
            ClockRow(
                clock_id=v.clock_id,
                case_id=v.case_id,
                order_id=v.order_id,
                kind=v.clock,
                responsible=v.responsible,
                started_at=started,
                deadline_at=deadline,
                state=state_name(sla_pb2.ClockState, v.state, "CLOCK_STATE_"),
                breached=v.breached,
                stopped_at=ts(v.stop_time),
                stopped_by=v.stopped_by,
            )
        )
        for e in v.events:
            at = ts(e.event_time)
            if at is None:
                continue
            log.append(
                LogRow(
                    id=len(log) + 1,
                    clock_id=e.clock_id or v.clock_id,
                    case_id=e.case_id,
                    order_id=e.order_id,
                    kind=e.clock,
                    event=e.event,
                    at=at,
                    due_at=ts(e.due_time),
                    responsible=e.responsible,
                    late_seconds=e.late.ToTimedelta().total_seconds(),
                    detail=e.detail,
                )
            )
    clocks.sort(key=lambda c: (c.started_at, c.clock_id))
    log.sort(key=lambda r: (r.at, r.id))
    return clocks, log


def acknowledged(view: sla_pb2.ClockView) -> tuple[datetime | None, str]:
    """When and by whom a breach was acknowledged (SlaService.AcknowledgeBreach)."""
    by, person = view.acknowledged_by, view.acknowledged_operator
    return ts(view.acknowledge_time), (f"{by} · {person}" if person else by)


def breach_rows(views: list[sla_pb2.ClockView], now: datetime) -> list[dict[str, Any]]:
    """Every breached clock, the latest first by how late it was (or still is)."""
    rows: list[dict[str, Any]] = []
    for v in views:
        deadline = ts(v.deadline_time)
        if deadline is None or not (v.breached or v.state == sla_pb2.CLOCK_STATE_MISSED):
            continue
        stopped = ts(v.stop_time)
        late = (stopped or now) - deadline
        ack_at, ack_by = acknowledged(v)
        rows.append(
            {
                "clock": v,
                "name": clock_name(v.clock),
                "state": state_name(sla_pb2.ClockState, v.state, "CLOCK_STATE_"),
                "deadline": deadline,
                "late": duration(late),
                "late_seconds": late.total_seconds(),
                "still_open": v.state == sla_pb2.CLOCK_STATE_OPEN,
                "ack_at": ack_at,
                "ack_by": ack_by,
            }
        )
    rows.sort(key=lambda r: -r["late_seconds"])
    return rows


def figure_rows(rows: list[SummaryRow]) -> list[dict[str, Any]]:
    def secs(value: float | None) -> str:
        return duration(timedelta(seconds=value)) if value is not None else "—"

    return [
        {
            "r": r,
            "name": clock_name(r.clock),
            "share": f"{r.share_met:.0%}" if r.share_met is not None else "—",
            "median": secs(r.median_seconds),
            "p90": secs(r.p90_seconds),
            "deadline": secs(r.deadline_seconds),
        }
        for r in rows
    ]


@page()
async def sla(request: Request) -> Response:
    if (other := _not_here(request)) is not None:
        return other
    desk = desk_of(request)
    try:
        views = await _all_clocks(desk)
    except (HubError, HubSignatureError) as err:
        return render(request, "common/hub_refused.html", {"refusal": Refusal.of(err)}, status=502)
    now = desk.clock.now()
    clocks, log = report_rows(views)
    breaches = breach_rows(views, now)
    return render(
        request,
        "oversight/sla.html",
        {
            "kinds": figure_rows(summarise(clocks, log, by_institution=False)),
            "institutions": figure_rows(summarise(clocks, log)),
            "breaches": breaches[:300],
            "breach_count": len(breaches),
            "unacknowledged": sum(1 for b in breaches if b["ack_at"] is None),
            "clock_count": len(clocks),
            "open_count": sum(1 for c in clocks if c.state == "open"),
        },
    )


# ---- the SLA report, as `stophub report sla` writes it ------------------------------------


@contextlib.contextmanager
def _zone(zone: Any) -> Iterator[None]:
    """hub/render writes instants in the process's display zone: the console's, while the
    report is drawn (no await in between, so no other page sees it)."""
    before = display_zone()
    set_display_zone(zone)
    try:
        yield
    finally:
        set_display_zone(before)


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@page()
async def sla_report(request: Request) -> Response:
    if (other := _not_here(request)) is not None:
        return other
    desk = desk_of(request)
    _ = gettext_for(request)
    zone = desk.zone
    start_text = request.query_params.get("from", "").strip()
    end_text = request.query_params.get("to", "").strip()
    start_day, end_day = _day(start_text), _day(end_text)
    if (start_text and start_day is None) or (end_text and end_day is None):
        return refuse(request, 400, _("Give the period's days as YYYY-MM-DD."))
    start = day_start(start_day, zone) if start_day else None
    # The `to` day is included, as `stophub report sla --to DATE`.
    end = day_start(end_day + timedelta(days=1), zone) if end_day else None
    if start is not None and end is not None and end <= start:
        return refuse(request, 400, _("The end of the period must come after its start."))
    try:
        views = await _all_clocks(desk)
        checkpoint = await _report_checkpoint(desk)
        page_ = await desk.link.call(lambda c: c.list_audit_entries(0, 1))
    except HubSignatureError as err:
        return render(
            request,
            "common/hub_refused.html",
            {"refusal": Refusal.of(err)},
            status=502,
        )
    except HubError as err:
        return render(request, "common/hub_refused.html", {"refusal": Refusal.of(err)}, status=502)
    clocks, log = report_rows(views)
    now = desk.clock.now()
    span = (clocks[0].started_at, max(c.started_at for c in clocks)) if clocks else None
    start, end = period(start, end, span, zone, now)
    chosen = [c for c in clocks if start <= c.started_at < end]
    ids = {c.clock_id for c in chosen}
    report = SlaReport(
        start,
        end,
        now,
        chosen,
        [r for r in log if r.clock_id in ids],
        zone=zone,
        database=f"the hub at {desk.link.client.target}, read over gRPC by {desk.institution}",
        span=span,
        checkpoint=checkpoint,
        log_size=page_.tree_size,
    )
    name = f"stophub-sla-{start.astimezone(zone):%Y%m%d}-{end.astimezone(zone):%Y%m%d}.html"
    with _zone(zone):
        html = render_html(report, name)
    digest = hashlib.sha256(html.encode("utf-8")).hexdigest()
    headers = {"X-Content-SHA256": digest}
    if request.query_params.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    actions.journal(
        desk,
        viewer_of(request).username,
        "sla_report",
        f"SLA report {name} ({len(chosen)} clocks)",
        "done",
        detail=f"sha256 {digest}",
    )
    return HTMLResponse(html, headers=headers)


async def _report_checkpoint(desk: Desk) -> Checkpoint | None:
    """The latest checkpoint, its signature checked by the SDK with the hub keys this console
    holds (HubSignatureError when it does not verify: no report rests on it)."""
    try:
        envelope, cp = await desk.link.call(lambda c: c.get_log_checkpoint())
    except HubError as err:
        if err.reason == "NO_CHECKPOINT":
            return None
        raise
    return Checkpoint(
        cp.tree_size,
        cp.root_hash,
        ts(cp.checkpoint_time) or datetime.fromtimestamp(0, UTC),
        envelope.key_id,
        envelope.algorithm or "ed25519",
        envelope.signature,
        envelope.SerializeToString(),
    )


# ---- the audit log's checkpoint, kept and proved -------------------------------------------


@dataclass
class Finding:
    # first | consistent | unchanged | rollback | fork | signature | unproven | none
    verdict: str
    text: str
    against: int | None = None

    @property
    def red(self) -> bool:
        return self.verdict in RED


@dataclass
class Seen:
    tree_size: int
    root_hash: bytes
    signed_at: datetime | None
    key_id: str
    algorithm: str
    signature: bytes
    envelope: bytes


def _last_good(desk: Desk) -> KeptCheckpoint | None:
    with desk.db() as s:
        return s.scalars(
            select(KeptCheckpoint)
            .where(KeptCheckpoint.verdict.in_(GOOD))
            .order_by(KeptCheckpoint.tree_size.desc(), KeptCheckpoint.id.desc())
            .limit(1)
        ).first()


def _keep(desk: Desk, seen: Seen, finding: Finding) -> None:
    """Keep the checkpoint with its verdict, once per (size, root, verdict)."""
    with desk.db() as s:
        already = s.scalars(
            select(KeptCheckpoint).where(
                KeptCheckpoint.tree_size == seen.tree_size,
                KeptCheckpoint.root_hash == seen.root_hash,
                KeptCheckpoint.verdict == finding.verdict,
            )
        ).first()
        if already is not None:
            return
        s.add(
            KeptCheckpoint(
                tree_size=seen.tree_size,
                root_hash=seen.root_hash,
                signed_at=seen.signed_at or desk.clock.now(),
                key_id=seen.key_id,
                envelope=seen.envelope,
                seen_at=desk.clock.now(),
                verdict=finding.verdict,
                checked_against=finding.against,
                problem=finding.text if finding.red else "",
            )
        )


async def check_checkpoint(desk: Desk) -> tuple[Seen | None, Finding]:
    """Fetch the latest signed checkpoint, judge it against the largest good one kept, keep
    it. A transient failure to reach the hub is raised (HubError): it is no finding."""
    try:
        envelope, cp = await desk.link.call(lambda c: c.get_log_checkpoint())
    except HubSignatureError as err:
        return None, Finding(
            "signature",
            "The checkpoint the hub sent does not verify with the hub keys this console "
            f"holds: {err}. It was not kept.",
        )
    except HubError as err:
        if err.reason == "NO_CHECKPOINT":
            return None, Finding("none", "The hub has signed no checkpoint of its log yet.")
        raise
    seen = Seen(
        cp.tree_size,
        bytes(cp.root_hash),
        ts(cp.checkpoint_time),
        envelope.key_id,
        envelope.algorithm or "ed25519",
        bytes(envelope.signature),
        envelope.SerializeToString(),
    )
    last = _last_good(desk)
    if last is None:
        finding = Finding("first", "The first checkpoint this console has seen: kept.")
    elif seen.tree_size < last.tree_size:
        finding = Finding(
            "rollback",
            f"ROLLBACK: the hub's latest checkpoint has {seen.tree_size} entries, fewer than "
            f"the {last.tree_size} of a checkpoint it signed before (kept here since "
            f"{last.seen_at:%Y-%m-%d %H:%M:%S} UTC). A log only grows.",
            last.tree_size,
        )
    elif seen.tree_size == last.tree_size:
        if seen.root_hash == last.root_hash:
            finding = Finding("unchanged", "The log has not grown since the kept checkpoint.")
        else:
            finding = Finding(
                "fork",
                f"FORK: two checkpoints of {seen.tree_size} entries, both signed by the hub, "
                f"with different roots ({last.root_hash.hex()[:16]}… kept, "
                f"{seen.root_hash.hex()[:16]}… now).",
                last.tree_size,
            )
    else:
        finding = await _prove(desk, last, seen)
    if finding.verdict in ("first", "consistent", "rollback", "fork"):
        _keep(desk, seen, finding)
    return seen, finding


async def _prove(desk: Desk, last: KeptCheckpoint, seen: Seen) -> Finding:
    first, second = last.tree_size, seen.tree_size
    try:
        proof = await desk.link.call(lambda c: c.get_consistency_proof(first, second))
    except HubSignatureError as err:
        return Finding("signature", f"The hub's consistency proof does not verify: {err}.", first)
    except HubError as err:
        if err.transient:
            raise
        return Finding(
            "unproven",
            f"The hub would not prove the tree of {second} entries consistent with the kept "
            f"one of {first}: {err.reason or err.message}.",
            first,
        )
    hashes = [bytes(h) for h in proof.hashes]
    if (proof.first_size, proof.second_size) == (first, second) and verify_consistency(
        first, second, hashes, last.root_hash, seen.root_hash
    ):
        return Finding(
            "consistent",
            f"Proved consistent with the kept checkpoint of {first} entries: the log of "
            f"{second} entries extends it, nothing in it was changed or removed.",
            first,
        )
    return Finding(
        "fork",
        f"FORK: the tree of {second} entries is not an extension of the kept one of {first} "
        "entries (the consistency proof fails): the hub's log was rewritten, or it shows "
        "different logs to different readers.",
        first,
    )


@page()
async def audit(request: Request) -> Response:
    if (other := _not_here(request)) is not None:
        return other
    desk = desk_of(request)
    refusal = None
    seen: Seen | None = None
    finding: Finding | None = None
    try:
        seen, finding = await check_checkpoint(desk)
    except HubError as err:
        refusal = Refusal.of(err)
    if finding is not None and request.query_params.get("verify"):
        actions.journal(
            desk,
            viewer_of(request).username,
            "audit_verify",
            f"audit checkpoint {seen.tree_size if seen else '-'}: {finding.verdict}",
            "done" if not finding.red else "failed",
            detail=finding.text,
        )
    with desk.db() as s:
        kept = list(s.scalars(select(KeptCheckpoint).order_by(KeptCheckpoint.id.desc()).limit(50)))
        earlier_red = list(
            s.scalars(
                select(KeptCheckpoint)
                .where(KeptCheckpoint.verdict.in_(RED))
                .order_by(KeptCheckpoint.id.desc())
            )
        )
    return render(
        request,
        "oversight/audit.html",
        {
            "seen": seen,
            "finding": finding,
            "refusal": refusal,
            "kept": kept,
            "earlier_red": earlier_red,
            "hub_keys": sorted(desk.link.client.hub_keys),
            "envelope_b64": base64.b64encode(seen.envelope).decode() if seen else "",
        },
        status=200,
    )


ROUTES: list[BaseRoute] = [
    Route("/sla", sla),
    Route("/sla/report", sla_report),
    Route("/audit", audit),
]
