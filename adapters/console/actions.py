"""Every action a person takes at the console is one signed message to the hub, with the
person inside it (Envelope.operator, and for an approved action Envelope.approver).

An action is declared once (`Action`: who may take it, how its form is read, what it sends)
and taken through `take`: at once, or, when the console's configuration says the action needs
a second person, as a `Proposal` that waits in the supervisors' inbox until one who is not the
maker approves it (then it is sent) or rejects it, or until it expires."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy import select, update

from adapters.console.models import JournalEntry, Proposal
from adapters.console.web import Desk, Viewer
from adapters.sdk import HubClient, HubError, HubSignatureError

Payload = dict[str, Any]


class FormErrors(Exception):
    """What is wrong with a form, by field, in the reader's words; nothing was sent."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


@dataclass(frozen=True)
class Done:
    """What a sent action did: a line for the person, and where to look next."""

    text: str
    url: str
    case_id: str = ""
    message_id: str = ""


@dataclass(frozen=True)
class Action:
    name: str
    # Institution kinds whose console offers it.
    kinds: frozenset[str]
    # How a proposal or journal entry names it (English; translated in the page).
    describe: Callable[[Payload], str]
    # Sends it; raises HubError when the hub refuses.
    send: Callable[[HubClient, Payload], Awaitable[Done]]
    case_of: Callable[[Payload], str] = field(default=lambda p: str(p.get("case_id", "")))


REGISTRY: dict[str, Action] = {}


def register(action: Action) -> Action:
    if action.name in REGISTRY:
        raise ValueError(f"action {action.name} declared twice")
    REGISTRY[action.name] = action
    return action


@dataclass(frozen=True)
class Outcome:
    """What `take` did: sent (done), waiting for approval (proposal), or refused."""

    done: Done | None = None
    proposal: Proposal | None = None
    refusal: Refusal | None = None


@dataclass(frozen=True)
class Refusal:
    """The hub's refusal (or the link's failure) in words an officer can act on."""

    status: str
    reason: str
    field: str
    message: str
    transient: bool

    @classmethod
    def of(cls, err: HubError | HubSignatureError) -> Refusal:
        if isinstance(err, HubSignatureError):
            return cls(
                "UNAUTHENTICATED",
                "HUB_SIGNATURE",
                "",
                "The hub's answer did not verify. Nothing was acted on; tell your security "
                f"officer. ({err})",
                False,
            )
        code = err.code.name if isinstance(err.code, grpc.StatusCode) else str(err.code)
        return cls(code, err.reason, err.field, err.message, err.transient)


def journal(
    desk: Desk,
    person: str,
    action: str,
    summary: str,
    outcome: str,
    *,
    case_id: str = "",
    approver: str = "",
    message_id: str = "",
    detail: str = "",
) -> None:
    with desk.db() as s:
        s.add(
            JournalEntry(
                time=desk.clock.now(),
                person=person,
                action=action,
                case_id=case_id,
                summary=summary,
                approver=approver,
                message_id=message_id,
                outcome=outcome,
                detail=detail,
            )
        )


async def send(
    desk: Desk, action: Action, payload: Payload, operator: str, approver: str = ""
) -> Outcome:
    """Send `action` now, signed with `operator` (and `approver`) inside the envelope."""
    summary = action.describe(payload)
    case_id = action.case_of(payload)
    client = desk.link.client
    try:
        with client.acting(operator, approver):
            done = await desk.link.call(lambda c: action.send(c, payload))
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
        journal(
            desk,
            operator,
            action.name,
            summary,
            "refused",
            case_id=case_id,
            approver=approver,
            message_id=getattr(err, "message_id", ""),
            detail=f"{refusal.status} {refusal.reason}: {refusal.message}",
        )
        return Outcome(refusal=refusal)
    journal(
        desk,
        operator,
        action.name,
        summary,
        "done",
        case_id=done.case_id or case_id,
        approver=approver,
        message_id=done.message_id,
        detail=done.text,
    )
    return Outcome(done=done)


async def take(desk: Desk, viewer: Viewer, name: str, payload: Payload) -> Outcome:
    """`viewer` takes action `name`: sent now, or proposed when it needs a second person."""
    action = REGISTRY[name]
    if not viewer.can_act:
        raise PermissionError("viewer")
    if name not in desk.config.approval:
        return await send(desk, action, payload, viewer.username)
    now = desk.clock.now()
    proposal = Proposal(
        id=str(uuid.uuid4()),
        action=name,
        payload=json.dumps(payload, ensure_ascii=False, sort_keys=True),
        summary=action.describe(payload),
        case_id=action.case_of(payload),
        maker=viewer.username,
        created_at=now,
        expires_at=now + desk.config.proposal_ttl,
        state="pending",
        message_id="",
        outcome="",
    )
    with desk.db() as s:
        s.add(proposal)
    journal(
        desk,
        viewer.username,
        name,
        proposal.summary,
        "proposed",
        case_id=proposal.case_id,
        detail=f"proposal {proposal.id}",
    )
    desk.notify("proposal", proposal.summary, url=f"/proposals/{proposal.id}")
    return Outcome(proposal=proposal)


class DecisionError(Exception):
    """A decision on a proposal that cannot be taken, in the reader's words."""


def expire(desk: Desk) -> int:
    """Mark proposals nobody decided in time as expired; how many."""
    now = desk.clock.now()
    with desk.db() as s:
        stale = list(
            s.scalars(
                select(Proposal).where(Proposal.state == "pending", Proposal.expires_at <= now)
            )
        )
        for p in stale:
            p.state = "expired"
            p.decided_at = now
    for p in stale:
        journal(desk, p.maker, p.action, p.summary, "expired", case_id=p.case_id)
    return len(stale)


def _claim(desk: Desk, proposal_id: str, viewer: Viewer, state: str) -> Proposal:
    """Move a pending proposal to `state` at most once, even with two supervisors clicking:
    the update names the state it expects."""
    expire(desk)
    now = desk.clock.now()
    with desk.db() as s:
        proposal = s.get(Proposal, proposal_id)
        if proposal is None:
            raise DecisionError("There is no such proposal.")
        if proposal.maker == viewer.username:
            raise DecisionError(
                "You made this proposal: another supervisor must decide it (maker-checker)."
            )
        if proposal.state != "pending":
            raise DecisionError("This proposal has already been decided.")
        changed = s.execute(
            update(Proposal)
            .where(Proposal.id == proposal_id, Proposal.state == "pending")
            .values(state=state, decided_by=viewer.username, decided_at=now)
        )
        if getattr(changed, "rowcount", 1) != 1:
            raise DecisionError("Someone else decided this proposal a moment ago.")
        s.refresh(proposal)
        return proposal


async def approve(desk: Desk, viewer: Viewer, proposal_id: str) -> Outcome:
    if not viewer.supervisor:
        raise DecisionError("Only a supervisor can approve.")
    proposal = _claim(desk, proposal_id, viewer, "sending")
    action = REGISTRY[proposal.action]
    outcome = await send(
        desk, action, json.loads(proposal.payload), proposal.maker, viewer.username
    )
    with desk.db() as s:
        row = s.get(Proposal, proposal_id)
        assert row is not None
        if outcome.done:
            row.state = "done"
            row.message_id = outcome.done.message_id
            row.outcome = outcome.done.text
        else:
            assert outcome.refusal
            row.state = "failed"
            row.outcome = f"{outcome.refusal.status} {outcome.refusal.reason}: " + (
                outcome.refusal.message
            )
    return outcome


def reject(desk: Desk, viewer: Viewer, proposal_id: str, reason: str) -> Proposal:
    if not viewer.supervisor:
        raise DecisionError("Only a supervisor can reject.")
    if not reason.strip():
        raise DecisionError("Say why you reject it: the maker reads it.")
    proposal = _claim(desk, proposal_id, viewer, "rejected")
    with desk.db() as s:
        row = s.get(Proposal, proposal_id)
        assert row is not None
        row.outcome = reason.strip()
    journal(
        desk,
        proposal.maker,
        proposal.action,
        proposal.summary,
        "rejected",
        case_id=proposal.case_id,
        approver=viewer.username,
        detail=reason.strip(),
    )
    return proposal


def pending(desk: Desk) -> list[Proposal]:
    expire(desk)
    with desk.db() as s:
        return list(
            s.scalars(
                select(Proposal).where(Proposal.state == "pending").order_by(Proposal.created_at)
            )
        )
