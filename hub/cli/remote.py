"""The read commands over gRPC, from any workstation, as a member institution (--identity):
`case list|show`, `sla`, `board`, `list show` and `appeal list` ask the hub with the
institution's signed requests instead of opening its database, and the hub answers what its
permission matrix (docs/permissions.md) lets that institution see.

`Remote` holds one client and one event loop for a command's life (the board's too, frame
after frame), and turns the hub's signed answers into the domain objects the renderers in
hub/render/ already draw (hub/cli/answers.py), so the output is the local one's. What an
answer does not carry stays empty (an addressee bank gets no victim); the commands say so
rather than fill it in. Refusals (HubError) and unusable answers (HubSignatureError) reach
the main group as one-line errors (hub/cli/common.py `refusal_line`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self, TypeVar, cast

import click
import grpc

from adapters.sdk import HubCertificateError, HubClient, HubError, HubSignatureError
from adapters.sdk.identity import IDENTITY_FILE, Identity
from hub.cli.answers import appeal_from_proto, case_from_proto, clock_from_proto
from hub.cli.common import command_clock
from hub.domain.appeals import Appeal
from hub.domain.blacklist import Entry
from hub.domain.cases import Case, CaseState
from hub.domain.clocks import CaseClock, SlaEntry
from hub.render.sla import OPEN_CASE_STATES, RECENT, RECENT_SHOWN, Board, BoardCase
from hub.service import wire
from hub.service.lists import entry_from_wire
from hub.service.ports import Clock
from stophub.v1 import appeal_pb2, blacklist_pb2, case_pb2, institution_pb2, sla_pb2, trail_pb2

T = TypeVar("T")

# How long a command waits for the hub's connection before it says it cannot reach it.
CONNECT_TIMEOUT = 10.0
PAGE = 200  # the hub's largest page (hub/service/paging.py MAX_PAGE_SIZE)
# The board reads at most this many breached clocks to find the last hour's.
BREACHED_READ = 1000


# ---- what the commands read ---------------------------------------------------------------------


@dataclass
class RemoteCase:
    """`case show`'s answer: the case, the other cases reaching its accounts, and what the
    hub withheld from this institution."""

    case: Case
    linked: list[tuple[str, str, str]]
    # The hub cleared the victim and the linked cases: the caller holds orders in the case.
    victim_withheld: bool


@dataclass
class ListView:
    """`list show`'s answer: the list's state as the hub's signed checkpoints say it, and its
    live entries (each copy checked against its checkpoint's count and digest)."""

    version: int
    count: int
    clear_digest: bytes
    token_digest: bytes
    list_key_id: str
    entries: list[Entry] = field(default_factory=list)


class Remote:
    """One institution's connection to the hub for the life of one command."""

    def __init__(
        self, identity: Identity, clock: Clock, *, connect_timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.connect_timeout = connect_timeout
        self._loop = asyncio.new_event_loop()
        self._client: HubClient | None = None

    @property
    def institution(self) -> str:
        return self.identity.institution

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            if self._client is not None:
                self._loop.run_until_complete(self._client.close())
        finally:
            self._loop.close()

    def run(self, call: Callable[[HubClient], Coroutine[Any, Any, T]]) -> T:
        """`call` with the connected client, on this command's event loop."""
        return self._loop.run_until_complete(self._with_client(call))

    async def _with_client(self, call: Callable[[HubClient], Awaitable[T]]) -> T:
        if self._client is None:
            self._client = self.identity.client(clock=self.clock)
            try:
                await self._client.connect(self.connect_timeout)
            except HubCertificateError:
                raise
            except HubError as err:
                where = self.identity.directory / IDENTITY_FILE
                said = err.message.rstrip(". ")
                raise HubError(
                    err.code,
                    f"{said}{' ' if said.endswith('?') else '. '}Check the address (--hub, or "
                    f"hub in {where}) and the network between here and there",
                ) from err
        return await call(self._client)

    # ---- cases ----------------------------------------------------------------------------

    def cases(self, state: CaseState | None, limit: int) -> list[Case]:
        """Newest first, at most `limit`: every case for the centre and the regulator, its
        own reports for a bank or payment institution."""

        async def read(client: HubClient) -> list[Case]:
            found: list[Case] = []
            token = ""
            number = cast(
                case_pb2.CaseState.ValueType, wire.CASE_STATES[state] if state is not None else 0
            )
            while len(found) < limit:
                body = case_pb2.ListCasesBody(
                    page_size=min(PAGE, limit - len(found)), page_token=token, state=number
                )
                _, page = await client.call("ListCases", body)
                assert isinstance(page, case_pb2.CaseList)
                found.extend(case_from_proto(c) for c in page.cases)
                if not page.next_page_token or page.next_page_token == token:
                    break
                token = page.next_page_token
            return found[:limit]

        return self.run(read)

    def case(self, case_id: str) -> RemoteCase:
        pb = self.run(lambda client: client.get_case(case_id))
        linked = [
            (link.case_id, link.account.institution_code, link.account.account_number)
            for link in pb.linked_cases
        ]
        return RemoteCase(case_from_proto(pb), linked, not pb.report.HasField("victim"))

    def trail(self, case_id: str) -> trail_pb2.Trail | None:
        """The case's money trail; None when the hub does not share it with this institution
        (TRAIL_NOT_SHARED: it holds orders in the case). Any other refusal is raised."""
        try:
            return self.run(lambda client: client.get_case_trail(case_id))
        except HubError as err:
            if err.reason == "TRAIL_NOT_SHARED":
                return None
            raise

    # ---- clocks ---------------------------------------------------------------------------

    def clocks(
        self,
        *,
        institution: str | None,
        case_id: str | None,
        open_only: bool,
        breached_only: bool = False,
        keep: Callable[[CaseClock], bool] = lambda c: True,
        limit: int,
    ) -> tuple[list[CaseClock], dict[str, list[SlaEntry]]]:
        """Clocks in the hub's order (running first, by deadline) that `keep` accepts, at
        most `limit`, and each one's SLA log."""

        async def read(client: HubClient) -> tuple[list[CaseClock], dict[str, list[SlaEntry]]]:
            found: list[CaseClock] = []
            logs: dict[str, list[SlaEntry]] = {}
            token = ""
            while len(found) < limit:
                body = sla_pb2.ListClocksBody(
                    page_size=PAGE,
                    page_token=token,
                    institution=institution or "",
                    case_id=case_id or "",
                    open_only=open_only,
                    breached_only=breached_only,
                )
                _, page = await client.call("ListClocks", body)
                assert isinstance(page, sla_pb2.ClockList)
                for view in page.clocks:
                    clock, entries = clock_from_proto(view)
                    if keep(clock):
                        found.append(clock)
                        logs[clock.clock_id] = entries
                if not page.next_page_token or page.next_page_token == token:
                    break
                token = page.next_page_token
            return found[:limit], logs

        return self.run(read)

    def board(self, now: datetime, *, limit: int) -> Board:
        """One frame's worth (hub/render/sla.py `load_board`, over gRPC): open cases with
        their running clocks, most urgent first, the last hour's breaches and the duty phones.
        A case this institution may not read (a bank's clock in another's case it holds no
        order in cannot happen; the centre reads every case) is shown without its details."""
        running, _ = self.clocks(institution=None, case_id=None, open_only=True, limit=20 * limit)
        since = now - RECENT
        breached, _ = self.clocks(
            institution=None,
            case_id=None,
            open_only=False,
            breached_only=True,
            keep=lambda c: (
                c.deadline_at >= since or (c.stopped_at is not None and c.stopped_at >= since)
            ),
            limit=BREACHED_READ,
        )
        by_case: dict[str, BoardCase] = {}
        for clock in running:
            if clock.case_id not in by_case:
                if len(by_case) >= limit:
                    continue
                by_case[clock.case_id] = BoardCase(clock.case_id, None)
            by_case[clock.case_id].clocks.append(clock)
        for state in OPEN_CASE_STATES:
            for found in self.cases(state, limit):
                if found.case_id in by_case:
                    by_case[found.case_id].case = found
                elif len(by_case) < limit:
                    by_case[found.case_id] = BoardCase(found.case_id, found)
        unread = [b.case_id for b in by_case.values() if b.case is None]
        for case_id, case in zip(
            unread, self.run(lambda c: _cases_or_none(c, unread)), strict=True
        ):
            by_case[case_id].case = case
        recent = {c.clock_id: c for c in breached}
        for clock in running:
            if since <= clock.deadline_at < now:
                recent.setdefault(clock.clock_id, clock)
        codes = sorted({c.responsible for c in (*running, *recent.values()) if c.responsible})
        phones = dict(zip(codes, self.run(lambda c: _duty_phones(c, codes)), strict=True))

        def most_urgent_first(b: BoardCase) -> tuple[bool, float, str]:
            first = b.urgency()
            return (first is None, first.timestamp() if first else 0.0, b.case_id)

        latest_first = sorted(
            recent.values(), key=lambda c: (c.deadline_at, c.clock_id), reverse=True
        )
        return Board(
            now,
            sorted(by_case.values(), key=most_urgent_first),
            latest_first[:RECENT_SHOWN],
            {code: phone for code, phone in phones.items() if phone},
        )

    # ---- the list -------------------------------------------------------------------------

    def list_view(self, limit: int) -> ListView:
        """The list copied in both forms (clear for its entries, tokens for the token digest
        and list key), each copy checked against the hub-signed checkpoint that ends it."""
        clear, clear_entries = self.run(lambda c: _copy(c, blacklist_pb2.LIST_FORM_CLEAR))
        tokens, _ = self.run(lambda c: _copy(c, blacklist_pb2.LIST_FORM_TOKENS))
        entries = sorted(
            (entry_from_wire(e.SerializeToString()) for e in clear_entries),
            key=lambda e: (e.listed_at, e.entry_id),
        )
        return ListView(
            clear.version,
            clear.entry_count,
            clear.digest,
            tokens.digest,
            tokens.list_key_id,
            entries[:limit],
        )

    # ---- appeals --------------------------------------------------------------------------

    def appeals(self, open_only: bool, limit: int) -> tuple[list[Appeal], set[str]]:
        """Appeals newest first (at most `limit`) and the names of their cases this
        institution may read, to mask in their reasons."""

        async def read(client: HubClient) -> tuple[list[Appeal], set[str]]:
            state = appeal_pb2.APPEAL_STATE_FILED if open_only else 0
            try:
                found = await client.list_appeals(page_size=min(limit, PAGE), state=state)
            except HubError as err:
                if err.code is grpc.StatusCode.UNIMPLEMENTED:
                    raise click.ClickException(_NOT_SERVED) from err
                raise
            appeals = [appeal_from_proto(a) for a in found][:limit]
            case_ids = sorted({a.case_id for a in appeals})
            cases = await _cases_or_none(client, case_ids)
            names = {n for c in cases if c is not None for n in c.personal_names()}
            return appeals, names

        return self.run(read)


def connect(identity: Identity) -> Remote:
    """The command's connection as `identity` (hub/cli/common.py `remote_options`), on the
    command's clock; a caller that drives the command itself (a test) may shorten the wait
    for an unreachable hub with `obj={"connect_timeout": SECONDS}`."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    wait = obj.get("connect_timeout") if isinstance(obj, dict) else None
    return Remote(identity, command_clock(), connect_timeout=float(wait or CONNECT_TIMEOUT))


_NOT_SERVED = (
    "appeal list over gRPC is not yet supported by this hub (it needs "
    "AppealService.ListAppeals): read it on the hub's host, without --identity"
)


async def _cases_or_none(client: HubClient, case_ids: Sequence[str]) -> list[Case | None]:
    """Each case as the hub shows it to this institution, or None where it refuses."""

    async def one(case_id: str) -> Case | None:
        try:
            return case_from_proto(await client.get_case(case_id))
        except HubError as err:
            if err.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
                return None
            raise

    return list(await asyncio.gather(*(one(case_id) for case_id in case_ids)))


async def _duty_phones(client: HubClient, codes: Sequence[str]) -> list[str]:
    """Each institution's PRIMARY duty phone as the registry holds it ('' for none)."""

    async def one(code: str) -> str:
        try:
            member = await client.member(code)
        except HubError:
            return ""
        primary = (
            c.phone for c in member.duty_contacts if c.role == institution_pb2.CONTACT_ROLE_PRIMARY
        )
        return next(primary, "")

    return list(await asyncio.gather(*(one(code) for code in codes)))


async def _copy(
    client: HubClient, form: blacklist_pb2.ListForm.ValueType
) -> tuple[blacklist_pb2.ListCheckpoint, list[blacklist_pb2.ListEntry]]:
    """A whole copy of the list in `form` and the checkpoint that proves it: the copy's
    count and digest must be the checkpoint's (docs/blacklist.md), or HubSignatureError."""
    entries: list[blacklist_pb2.ListEntry] = []
    async for part in client.sync_list(0, form):
        which = part.WhichOneof("part")
        if which == "entries":
            entries.extend(part.entries.entries)
        elif which == "changes":  # from version 0 the hub sends a snapshot; be exact anyway
            for change in part.changes.changes:
                if change.op == blacklist_pb2.LIST_CHANGE_OP_ADD:
                    entries.append(change.entry)
                else:
                    entries = [e for e in entries if e.entry_id != change.entry_id]
        elif which == "checkpoint":
            checkpoint = client.open_checkpoint(part.checkpoint)
            digest = _digest(entries, form)
            if checkpoint.entry_count != len(entries) or checkpoint.digest != digest:
                raise HubSignatureError(
                    f"the list's copy ({len(entries)} entries, digest {digest.hex()}) is not "
                    f"what the hub signed at version {checkpoint.version} "
                    f"({checkpoint.entry_count} entries, digest {checkpoint.digest.hex()})"
                )
            return checkpoint, entries
    raise HubSignatureError("the hub's copy of the list ended without a signed checkpoint")


def _digest(entries: Sequence[blacklist_pb2.ListEntry], form: int) -> bytes:
    """The sum modulo 2^256 of the entries' leaf hashes in `form`, 32 bytes big-endian."""
    total = 0
    for pb in entries:
        entry = entry_from_wire(pb.SerializeToString())
        tokens = form == blacklist_pb2.LIST_FORM_TOKENS
        total += entry.token_hash(pb.subject_token) if tokens else entry.clear_hash()
    return (total % 2**256).to_bytes(32, "big")
