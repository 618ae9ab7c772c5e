"""A fraud case and its orders: the rules of the emergency stop and quick freeze mechanism.

Plain Python: no I/O. Every transition takes `now` from the caller (the Clock
port) and appends a CaseEvent, so the clocks of the next layer can be derived
from the recorded times alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from hub.domain.institutions import CODE_PATTERN, HUB_CODE, InstitutionKind
from hub.domain.wording import mask, yuan

ACCOUNT_PATTERN = re.compile(r"^[0-9A-Za-z-]{4,40}$")
MAX_AMOUNT_FEN = 10**14  # one trillion yuan: anything above is a unit error, not a loss
MAX_TRANSACTIONS = 200
FUTURE_TOLERANCE = timedelta(minutes=5)  # institutions' clocks drift; more than this is an error


@dataclass(frozen=True)
class Policy:
    """The numbers of DESIGN.md's rules; every one is configuration."""

    stop_validity: timedelta = timedelta(hours=48)
    max_stops_per_account: int = 2
    freeze_terms_months: tuple[int, ...] = (6, 12)


class CaseState(StrEnum):
    REPORTED = "reported"
    VERIFIED = "verified"
    REJECTED = "rejected"
    CLOSED = "closed"


class OrderKind(StrEnum):
    STOP = "stop"
    FREEZE = "freeze"
    RELEASE = "release"
    RETURN = "return"


class OrderState(StrEnum):
    PENDING = "pending"
    HOLDING = "holding"
    NO_MATCH = "no_match"
    REJECTED = "rejected"
    RELEASED = "released"
    CONVERTED = "converted"
    RETURNED = "returned"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    RENEWED = "renewed"


class ExecutionStatus(StrEnum):
    EXECUTED = "executed"
    PARTIALLY_EXECUTED = "partially_executed"
    NO_MATCH = "no_match"
    REJECTED = "rejected"


class VerificationOutcome(StrEnum):
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


# ISO 20022 external codes where one fits; NMAT is StopHub's own (no match of the four facts).
REASON_CODES: Mapping[str, str] = {
    "AC04": "account closed",
    "AC01": "incorrect account number",
    "BE01": "inconsistent with end customer",
    "AM04": "insufficient funds",
    "ARDT": "already returned",
    "NOAS": "no answer from the account holder's institution",
    "LEGL": "legal decision",
    "FRAD": "fraudulent origin",
    "CUST": "requested by customer",
    "NMAT": "no match of holder name, account number, amount and transaction time",
    "NOHD": "no hold to act on",
}

HOLD_KINDS = (OrderKind.STOP, OrderKind.FREEZE)


@dataclass(frozen=True)
class AccountRef:
    institution_code: str
    account_number: str
    holder_name: str


@dataclass(eq=False)
class FraudTransaction:
    transaction_time: datetime
    amount_fen: int
    payer_institution: str
    payer_account: str
    payer_name: str
    payee_institution: str
    payee_account: str
    payee_name: str
    channel: str
    reference: str = ""
    position: int = 0
    case_id: str = ""


@dataclass(eq=False)
class TransactionFact:
    transaction_time: datetime
    amount_fen: int
    position: int = 0
    order_id: str = ""


@dataclass(eq=False)
class OnwardTransfer:
    transfer_time: datetime
    amount_fen: int
    to_institution: str
    to_account: str
    to_holder: str
    reference: str = ""
    position: int = 0
    order_id: str = ""
    # What of amount_fen carried the order's money, as the institution traced it (0: all).
    carried_fen: int = 0

    @property
    def traced_fen(self) -> int:
        return self.carried_fen or self.amount_fen


@dataclass(eq=False)
class CaseEvent:
    sequence: int
    at: datetime
    kind: str
    actor: str
    summary: str
    message_id: str = ""
    order_id: str = ""
    case_id: str = ""
    # The people at the actor behind the step: the signed envelope's operator and approver
    # (None for steps recorded before the hub kept them).
    operator: str | None = ""
    approver: str | None = ""

    def people(self) -> str:
        """' by OPERATOR (approved by APPROVER)' when the step names people, else ''."""
        return people_phrase(self.operator or "", self.approver or "")


def people_phrase(operator: str, approver: str) -> str:
    """How the timeline and the audit log name the people behind a message."""
    if not operator:
        return ""
    return f" by {operator}" + (f" (approved by {approver})" if approver else "")


@dataclass(frozen=True)
class Report:
    victim_name: str
    victim_id_number: str
    victim_phone: str
    fraud_type: str
    victim_report_time: datetime | None
    description: str
    transactions: Sequence[FraudTransaction]


@dataclass(frozen=True)
class StopCommand:
    account: AccountRef
    amount_fen: int
    transactions: Sequence[tuple[datetime, int]]
    # A downstream stop: the hold order whose answer reported the transfers into the account.
    upstream_order_id: str = ""


@dataclass(frozen=True)
class FreezeCommand:
    account: AccountRef
    amount_fen: int
    filed_case_number: str
    approving_authority: str
    term_months: int
    stop_order_id: str
    renews_order_id: str = ""


@dataclass(frozen=True)
class ReleaseCommand:
    target_order_id: str
    reason: str


@dataclass(frozen=True)
class ReturnCommand:
    freeze_order_id: str
    beneficiary: AccountRef
    amount_fen: int
    # Set only by a distribution's decision: it alone may pay one victim from another's case.
    distribution_id: str = ""
    beneficiary_case_id: str = ""


OrderCommand = StopCommand | FreezeCommand | ReleaseCommand | ReturnCommand


@dataclass(frozen=True)
class Execution:
    """An institution's answer to an order, as validated wire data."""

    status: ExecutionStatus
    reason_code: str
    reason: str
    amount_held_fen: int
    available_balance_fen: int
    amount_released_fen: int
    amount_returned_fen: int
    execute_time: datetime | None
    onward: Sequence[OnwardTransfer]


@dataclass(eq=False)
class Order:
    order_id: str
    case_id: str
    kind: OrderKind
    addressed_to: str
    issued_by: str
    issued_at: datetime
    origin_message_id: str
    state: OrderState = OrderState.PENDING
    auto_stop_rule_id: str | None = None
    # The account the order acts on (stop, freeze) or pays to (return).
    account_institution: str = ""
    account_number: str = ""
    holder_name: str = ""
    amount_fen: int = 0
    filed_case_number: str = ""
    approving_authority: str = ""
    term_months: int = 0
    # Release: the order released. Freeze: the stop it takes over. Return: the freeze paying.
    target_order_id: str = ""
    # Freeze: the freeze it renews before that one's term ends.
    renews_order_id: str = ""
    # Downstream stop: the hold order whose answer reported the transfers it follows.
    upstream_order_id: str = ""
    # Stop or freeze: the account's layer on the money trail (1: the account the victim paid).
    layer: int = 0
    # Return decided by a distribution: which one, and the case of the victim it pays.
    distribution_id: str = ""
    beneficiary_case_id: str = ""
    note: str = ""
    # The signed bytes: the centre's order (absent when issued under a standing rule), the
    # centre's signed rule that authorised an automatic order, and the institution's answer.
    origin_envelope: bytes | None = None
    authorization_envelope: bytes | None = None
    answer_envelope: bytes | None = None
    answer_message_id: str = ""
    answered_at: datetime | None = None
    effective_at: datetime | None = None
    expires_at: datetime | None = None
    result_status: ExecutionStatus | None = None
    result_reason_code: str = ""
    result_reason: str = ""
    amount_held_fen: int = 0
    available_balance_fen: int = 0
    executed_at: datetime | None = None
    held_fen: int = 0
    released_fen: int = 0
    returned_fen: int = 0
    facts: list[TransactionFact] = field(default_factory=list)
    onward: list[OnwardTransfer] = field(default_factory=list)

    @property
    def account(self) -> AccountRef:
        return AccountRef(self.account_institution, self.account_number, self.holder_name)

    @property
    def is_hold(self) -> bool:
        return self.kind in HOLD_KINDS


# What a new downstream stop may hold in an account: the victim's money the upstream order's
# reported transfers can have carried there, less what live stops on that branch claim
# (hub.domain.trail.branch_allowance).
BranchAllowance = Callable[["Case", "Order", "AccountRef"], int]


@dataclass(frozen=True)
class Closure:
    """A case just closed: its `case.closed` step, and its stops and freezes that held ¥0,
    each with the `order.expired` step that ended it with the case."""

    closed: CaseEvent
    lapsed: list[tuple[Order, CaseEvent]]


@dataclass(eq=False)
class Case:
    case_id: str
    reporting_institution: str
    created_at: datetime
    report_message_id: str
    victim_name: str
    victim_id_number: str
    victim_phone: str
    fraud_type: str
    description: str
    victim_report_time: datetime | None = None
    state: CaseState = CaseState.REPORTED
    verified_at: datetime | None = None
    closed_at: datetime | None = None
    verification_reason: str = ""
    report_envelope: bytes | None = None
    transactions: list[FraudTransaction] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    events: list[CaseEvent] = field(default_factory=list)
    # The store's blind index of the victim (hub/crypto/blindindex.py): keyed tokens of the
    # normalised name and ID number and the data key they were derived from. The store
    # writes them; the rules never read them.
    victim_name_token: bytes | None = None
    victim_id_token: bytes | None = None
    victim_index_key: str | None = None
    # The three-colour grade (hub/domain/grades.py): "red", "yellow", "green" or "" for
    # ungraded; set by the reporter, changed by the centre (Case.regrade).
    grade: str = ""

    def personal_names(self) -> set[str]:
        """Every person's name the case holds: the victim, payers, payees, the holders its
        orders act on and those its answers named (hub/domain/wording.py `redact`)."""
        names = {self.victim_name}
        for t in self.transactions:
            names |= {t.payer_name, t.payee_name}
        for o in self.orders:
            names.add(o.holder_name)
            names |= {t.to_holder for t in o.onward}
        return {n for n in names if n}

    # ---- report -------------------------------------------------------------------------

    @staticmethod
    def open(
        case_id: str,
        reporter: str,
        report: Report,
        *,
        now: datetime,
        message_id: str,
        institutions: Mapping[str, InstitutionKind],
    ) -> Case:
        validate_report(report, reporter, now, institutions)
        case = Case(
            case_id=case_id,
            reporting_institution=reporter,
            created_at=now,
            report_message_id=message_id,
            victim_name=report.victim_name,
            victim_id_number=report.victim_id_number,
            victim_phone=report.victim_phone,
            fraud_type=report.fraud_type,
            description=report.description,
            victim_report_time=report.victim_report_time,
        )
        for i, t in enumerate(report.transactions):
            t.position = i
            case.transactions.append(t)
        case.record(
            now,
            "report.received",
            reporter,
            f"report of {len(report.transactions)} transaction(s), loss "
            f"{yuan(case.loss_fen)}, received",
            message_id=message_id,
        )
        return case

    @property
    def loss_fen(self) -> int:
        return sum(t.amount_fen for t in self.transactions)

    def regrade(self, grade: str, by: str, reason: str, *, now: datetime, message_id: str) -> None:
        """The centre changes the case's grade; the timeline says from what, to what, why."""
        before = self.grade or "ungraded"
        self.grade = grade
        self.record(
            now,
            "case.graded",
            by,
            f"grade {before} -> {grade or 'ungraded'} by {by}: {reason}",
            message_id=message_id,
        )

    @property
    def held_fen(self) -> int:
        return sum(o.held_fen for o in self.orders if o.is_hold)

    @property
    def returned_fen(self) -> int:
        """Paid back from this case's freezes (to its victim, or to another victim whose money
        a distribution found in the same account)."""
        return sum(o.returned_fen for o in self.orders if o.kind is OrderKind.RETURN)

    @property
    def victim_account(self) -> AccountRef:
        """Where the victim's money came from, and where a return pays it back."""
        first = self.transactions[0]
        return AccountRef(first.payer_institution, first.payer_account, self.victim_name)

    @property
    def released_fen(self) -> int:
        return sum(o.released_fen for o in self.orders if o.kind is OrderKind.RELEASE)

    def payee_accounts(self) -> list[tuple[AccountRef, list[FraudTransaction]]]:
        """Layer-1 accounts in first-seen order, each with the transactions that reached it."""
        grouped: dict[tuple[str, str], tuple[AccountRef, list[FraudTransaction]]] = {}
        for t in self.transactions:
            key = (t.payee_institution, t.payee_account)
            if key not in grouped:
                grouped[key] = (AccountRef(*key, t.payee_name), [])
            grouped[key][1].append(t)
        return list(grouped.values())

    # ---- verification -------------------------------------------------------------------

    def verify(
        self,
        actor: str,
        outcome: VerificationOutcome,
        reason: str,
        *,
        now: datetime,
        message_id: str,
    ) -> None:
        if actor != self.reporting_institution:
            raise PermissionDenied(
                "NOT_REPORTING_INSTITUTION",
                f"only {self.reporting_institution}, which reported case {self.case_id}, "
                f"may verify it; {actor} may not",
            )
        if self.state is not CaseState.REPORTED:
            raise FailedPrecondition(
                "ALREADY_VERIFIED",
                f"case {self.case_id} was already verified (state {self.state.value}); "
                "a report is verified once",
            )
        if outcome is VerificationOutcome.REJECTED and not reason.strip():
            raise InvalidArgument("reason", "say why the report is rejected")
        self.verified_at = now
        self.verification_reason = reason
        if outcome is VerificationOutcome.CONFIRMED:
            self.state = CaseState.VERIFIED
            self.record(now, "report.verified", actor, "confirmed as fraud", message_id=message_id)
        else:
            self.state = CaseState.REJECTED
            self.record(now, "report.rejected", actor, f"rejected: {reason}", message_id=message_id)

    # ---- orders -------------------------------------------------------------------------

    def order(self, order_id: str) -> Order:
        for o in self.orders:
            if o.order_id == order_id:
                return o
        raise NotFound("ORDER_NOT_FOUND", f"case {self.case_id} has no order {order_id}")

    def issue(
        self,
        order_id: str,
        command: OrderCommand,
        *,
        issued_by: str,
        now: datetime,
        message_id: str,
        institutions: Mapping[str, InstitutionKind],
        policy: Policy,
        note: str = "",
        auto_stop_rule_id: str | None = None,
        branch_allowance: BranchAllowance | None = None,
    ) -> Order:
        """Issue an order in the name of centre `issued_by` (its kind is checked by the caller).

        A downstream stop (one naming `upstream_order_id`) is checked against the money trail
        the case's orders describe: `branch_allowance` is hub.domain.trail's, given by the
        caller because the trail is built from cases (this module cannot import it)."""
        if self.state is CaseState.REPORTED:
            raise FailedPrecondition(
                "CASE_NOT_VERIFIED",
                f"case {self.case_id} is not verified yet; orders follow verification",
            )
        if self.state is not CaseState.VERIFIED:
            raise FailedPrecondition(
                "CASE_ENDED", f"case {self.case_id} is {self.state.value}; it takes no orders"
            )
        base = {
            "order_id": order_id,
            "case_id": self.case_id,
            "issued_by": issued_by,
            "issued_at": now,
            "origin_message_id": message_id,
            "note": note,
            "auto_stop_rule_id": auto_stop_rule_id,
        }
        match command:
            case StopCommand():
                order = self._stop(command, base, now, institutions, policy, branch_allowance)
            case FreezeCommand():
                order = self._freeze(command, base, institutions, policy)
            case ReleaseCommand():
                order = self._release(command, base, now)
            case ReturnCommand():
                order = self._return(command, base, institutions)
        self.orders.append(order)
        how = f" under standing rule {auto_stop_rule_id}" if auto_stop_rule_id else ""
        self.record(
            now,
            "order.issued",
            HUB_CODE if auto_stop_rule_id else issued_by,
            f"{order.kind.value} order to {order.addressed_to}{how}: {describe(order)}",
            message_id=message_id,
            order_id=order_id,
        )
        return order

    def _stop(
        self,
        cmd: StopCommand,
        base: dict[str, object],
        now: datetime,
        institutions: Mapping[str, InstitutionKind],
        policy: Policy,
        branch_allowance: BranchAllowance | None,
    ) -> Order:
        validate_account("stop.account", cmd.account, institutions)
        validate_amount("stop.amount_fen", cmd.amount_fen)
        layer = 1
        if cmd.upstream_order_id:
            if branch_allowance is None:
                raise TypeError("a downstream stop needs the trail's branch_allowance")
            cmd, layer = self._downstream(cmd, branch_allowance)
        if not cmd.transactions:
            raise InvalidArgument(
                "stop.transactions",
                "name the fraudulent credit(s): a stop needs transaction time and amount",
            )
        for i, (at, amount) in enumerate(cmd.transactions):
            validate_amount(f"stop.transactions[{i}].amount_fen", amount)
            validate_past(f"stop.transactions[{i}].transaction_time", at, now)
        credited = sum(a for _, a in cmd.transactions)
        if cmd.amount_fen > credited:
            raise InvalidArgument(
                "stop.amount_fen",
                f"{yuan(cmd.amount_fen)} exceeds the {yuan(credited)} the named transactions "
                "credited; a stop holds the disputed amount, not the whole account",
            )
        earlier = [
            o
            for o in self.orders
            if o.kind is OrderKind.STOP
            and (o.account_institution, o.account_number)
            == (cmd.account.institution_code, cmd.account.account_number)
            and o.state not in (OrderState.NO_MATCH, OrderState.REJECTED, OrderState.CANCELLED)
        ]
        if len(earlier) >= policy.max_stops_per_account:
            raise FailedPrecondition(
                "STOP_LIMIT_REACHED",
                f"account {mask(cmd.account.account_number)} at "
                f"{cmd.account.institution_code} was already stopped {len(earlier)} times in "
                f"case {self.case_id}; at most {policy.max_stops_per_account} stops are allowed "
                "per account and case: freeze it instead",
            )
        order = Order(
            kind=OrderKind.STOP,
            addressed_to=cmd.account.institution_code,
            account_institution=cmd.account.institution_code,
            account_number=cmd.account.account_number,
            holder_name=cmd.account.holder_name,
            amount_fen=cmd.amount_fen,
            upstream_order_id=cmd.upstream_order_id,
            layer=layer,
            **base,  # type: ignore[arg-type]
        )
        order.facts = [
            TransactionFact(at, amount, position=i)
            for i, (at, amount) in enumerate(cmd.transactions)
        ]
        return order

    def _downstream(
        self, cmd: StopCommand, branch_allowance: BranchAllowance
    ) -> tuple[StopCommand, int]:
        """Check a downstream stop against the trail: the upstream answer reported transfers
        into the account, and the amount is within what of the victim's money they can have
        carried that no live stop on the same branch claims. Fills in the transfers as the
        credits to match when the command names none."""
        upstream = self.order(cmd.upstream_order_id)
        where = f"{mask(cmd.account.account_number)} at {cmd.account.institution_code}"
        if not upstream.is_hold:
            raise InvalidArgument(
                "stop.upstream_order_id",
                f"{upstream.order_id} is a {upstream.kind.value} order; downstream stops follow "
                "the onward transfers a stop or freeze answer reported",
            )
        transfers = [
            t
            for t in upstream.onward
            if (t.to_institution, t.to_account)
            == (cmd.account.institution_code, cmd.account.account_number)
        ]
        if not transfers:
            raise InvalidArgument(
                "stop.upstream_order_id",
                f"the answer to {upstream.order_id} reported no transfer to {where}",
            )
        allowance = branch_allowance(self, upstream, cmd.account)
        if cmd.amount_fen > allowance:
            raise InvalidArgument(
                "stop.amount_fen",
                f"{yuan(cmd.amount_fen)} exceeds the {yuan(allowance)} of the victim's money "
                f"that can have moved from {upstream.order_id} to {where} and no other stop "
                "on that branch holds; a stop never holds more along a branch than the loss "
                "that entered it",
            )
        if not cmd.transactions:
            cmd = StopCommand(
                cmd.account,
                cmd.amount_fen,
                [(t.transfer_time, t.amount_fen) for t in transfers],
                cmd.upstream_order_id,
            )
        return cmd, upstream.layer + 1 if upstream.layer else 2

    def _freeze(
        self,
        cmd: FreezeCommand,
        base: dict[str, object],
        institutions: Mapping[str, InstitutionKind],
        policy: Policy,
    ) -> Order:
        validate_account("freeze.account", cmd.account, institutions)
        validate_amount("freeze.amount_fen", cmd.amount_fen)
        if not cmd.filed_case_number.strip():
            raise InvalidArgument(
                "freeze.filed_case_number", "a freeze needs the filed criminal case number (立案)"
            )
        if not cmd.approving_authority.strip():
            raise InvalidArgument(
                "freeze.approving_authority", "a freeze needs the authority that approved it"
            )
        if cmd.term_months not in policy.freeze_terms_months:
            raise InvalidArgument(
                "freeze.term_months",
                f"{cmd.term_months} is not a freeze term; allowed: "
                + " or ".join(str(m) for m in policy.freeze_terms_months)
                + " months",
            )
        if cmd.stop_order_id:
            stop = self.order(cmd.stop_order_id)
            if stop.kind is not OrderKind.STOP:
                raise InvalidArgument(
                    "freeze.stop_order_id", f"{stop.order_id} is a {stop.kind.value} order"
                )
            if (stop.account_institution, stop.account_number) != (
                cmd.account.institution_code,
                cmd.account.account_number,
            ):
                raise InvalidArgument(
                    "freeze.stop_order_id", f"stop {stop.order_id} holds another account"
                )
            if stop.state is not OrderState.HOLDING:
                raise FailedPrecondition(
                    "STOP_NOT_HOLDING",
                    f"stop {stop.order_id} is {stop.state.value}; only a holding stop can be "
                    "turned into a freeze",
                )
        if cmd.renews_order_id:
            old = self.order(cmd.renews_order_id)
            if old.kind is not OrderKind.FREEZE or (
                old.account_institution,
                old.account_number,
            ) != (cmd.account.institution_code, cmd.account.account_number):
                raise InvalidArgument(
                    "freeze.renews_order_id",
                    f"{old.order_id} is not a freeze of this account",
                )
            if old.state is not OrderState.HOLDING:
                raise FailedPrecondition(
                    "FREEZE_NOT_HOLDING",
                    f"freeze {old.order_id} is {old.state.value}; only a holding freeze is renewed",
                )
        same_account = [
            o.layer
            for o in self.orders
            if o.is_hold
            and (o.account_institution, o.account_number)
            == (cmd.account.institution_code, cmd.account.account_number)
        ]
        return Order(
            renews_order_id=cmd.renews_order_id,
            layer=min((x for x in same_account if x), default=1),
            kind=OrderKind.FREEZE,
            addressed_to=cmd.account.institution_code,
            account_institution=cmd.account.institution_code,
            account_number=cmd.account.account_number,
            holder_name=cmd.account.holder_name,
            amount_fen=cmd.amount_fen,
            filed_case_number=cmd.filed_case_number,
            approving_authority=cmd.approving_authority,
            term_months=cmd.term_months,
            target_order_id=cmd.stop_order_id,
            **base,  # type: ignore[arg-type]
        )

    def _release(self, cmd: ReleaseCommand, base: dict[str, object], now: datetime) -> Order:
        if not cmd.target_order_id:
            raise InvalidArgument("release.target_order_id", "name the stop or freeze to release")
        target = self.order(cmd.target_order_id)
        if not target.is_hold:
            raise InvalidArgument(
                "release.target_order_id",
                f"{target.order_id} is a {target.kind.value} order; only stops and freezes hold",
            )
        if target.state not in (OrderState.PENDING, OrderState.HOLDING):
            raise FailedPrecondition(
                "NOTHING_TO_RELEASE",
                f"{target.kind.value} {target.order_id} is {target.state.value}; "
                "nothing to release",
            )
        if any(
            o.kind is OrderKind.RELEASE
            and o.target_order_id == target.order_id
            and o.state is OrderState.PENDING
            for o in self.orders
        ):
            raise FailedPrecondition(
                "RELEASE_PENDING",
                f"a release of {target.order_id} is already waiting for its answer",
            )
        if any(
            o.kind is OrderKind.RETURN
            and o.target_order_id == target.order_id
            and o.state is OrderState.PENDING
            for o in self.orders
        ):
            raise FailedPrecondition(
                "RETURN_PENDING",
                f"a return from {target.order_id} is waiting for its answer; release the "
                "freeze once the institution has answered it",
            )
        if target.state is OrderState.PENDING:
            # Not answered yet: withdraw it, so a late answer cannot create a hold.
            target.state = OrderState.CANCELLED
            self.record(
                now,
                "order.cancelled",
                str(base["issued_by"]),
                f"{target.kind.value} {target.order_id} withdrawn before it was answered",
                order_id=target.order_id,
            )
        return Order(
            kind=OrderKind.RELEASE,
            addressed_to=target.addressed_to,
            account_institution=target.account_institution,
            account_number=target.account_number,
            holder_name=target.holder_name,
            amount_fen=target.held_fen,
            target_order_id=target.order_id,
            **{**base, "note": cmd.reason or str(base["note"])},  # type: ignore[arg-type]
        )

    def _return(
        self,
        cmd: ReturnCommand,
        base: dict[str, object],
        institutions: Mapping[str, InstitutionKind],
    ) -> Order:
        if not cmd.freeze_order_id:
            raise InvalidArgument(
                "fund_return.freeze_order_id", "name the freeze that holds the money"
            )
        freeze = self.order(cmd.freeze_order_id)
        if freeze.kind is not OrderKind.FREEZE:
            raise InvalidArgument(
                "fund_return.freeze_order_id",
                f"{freeze.order_id} is a {freeze.kind.value} order; "
                "money is returned from a freeze",
            )
        if freeze.state is not OrderState.HOLDING:
            raise FailedPrecondition(
                "FREEZE_NOT_HOLDING",
                f"freeze {freeze.order_id} is {freeze.state.value}; it holds no money to return",
            )
        validate_account("fund_return.beneficiary", cmd.beneficiary, institutions)
        validate_amount("fund_return.amount_fen", cmd.amount_fen)
        if cmd.distribution_id and not cmd.beneficiary_case_id:
            raise InvalidArgument("fund_return.beneficiary_case_id", "a shared return names it")
        unclaimed = self.unclaimed_fen(freeze)
        if cmd.amount_fen > unclaimed:
            raise InvalidArgument(
                "fund_return.amount_fen",
                f"{yuan(cmd.amount_fen)} exceeds the {yuan(unclaimed)} that "
                f"freeze {freeze.order_id} holds and no other return has claimed",
            )
        return Order(
            kind=OrderKind.RETURN,
            addressed_to=freeze.addressed_to,
            account_institution=cmd.beneficiary.institution_code,
            account_number=cmd.beneficiary.account_number,
            holder_name=cmd.beneficiary.holder_name,
            amount_fen=cmd.amount_fen,
            target_order_id=freeze.order_id,
            distribution_id=cmd.distribution_id,
            beneficiary_case_id=cmd.beneficiary_case_id or self.case_id,
            **base,  # type: ignore[arg-type]
        )

    def unclaimed_fen(self, freeze: Order) -> int:
        """What a freeze holds that no pending return has claimed yet."""
        pending = sum(
            o.amount_fen
            for o in self.orders
            if o.kind is OrderKind.RETURN
            and o.target_order_id == freeze.order_id
            and o.state is OrderState.PENDING
        )
        return max(freeze.held_fen - pending, 0)

    # ---- answers ------------------------------------------------------------------------

    def answer(
        self,
        order_id: str,
        actor: str,
        result: Execution,
        *,
        now: datetime,
        message_id: str,
        policy: Policy,
    ) -> Order:
        order = self.order(order_id)
        if actor != order.addressed_to:
            raise PermissionDenied(
                "NOT_ADDRESSEE",
                f"order {order_id} is addressed to {order.addressed_to}; {actor} may not answer it",
            )
        if order.state is not OrderState.PENDING:
            why = {
                OrderState.CANCELLED: "it was withdrawn by a release before your answer arrived; "
                "do not hold, or lift the hold you placed",
            }.get(order.state, "it was already answered")
            raise FailedPrecondition(
                "ORDER_NOT_PENDING",
                f"order {order_id} is {order.state.value}: {why}",
            )
        validate_execution(order, result, now, self)
        order.result_status = result.status
        order.result_reason_code = result.reason_code
        order.result_reason = result.reason
        order.answered_at = now
        order.answer_message_id = message_id
        order.executed_at = result.execute_time or now
        order.available_balance_fen = result.available_balance_fen
        done = result.status in (ExecutionStatus.EXECUTED, ExecutionStatus.PARTIALLY_EXECUTED)
        if result.status is ExecutionStatus.NO_MATCH:
            order.state = OrderState.NO_MATCH
        elif result.status is ExecutionStatus.REJECTED:
            order.state = OrderState.REJECTED
        if order.kind is OrderKind.STOP and done:
            order.state = OrderState.HOLDING
            order.amount_held_fen = order.held_fen = result.amount_held_fen
            order.effective_at = order.executed_at
            order.expires_at = order.effective_at + policy.stop_validity
            for i, t in enumerate(result.onward):
                t.position = i
                order.onward.append(t)
        elif order.kind is OrderKind.FREEZE and done:
            order.state = OrderState.HOLDING
            order.amount_held_fen = order.held_fen = result.amount_held_fen
            order.effective_at = order.executed_at
            order.expires_at = add_months(order.effective_at, order.term_months)
            if order.target_order_id:
                stop = self.order(order.target_order_id)
                if stop.state is OrderState.HOLDING:
                    stop.state = OrderState.CONVERTED
                    stop.held_fen = 0
            if order.renews_order_id:
                old = self.order(order.renews_order_id)
                if old.state is OrderState.HOLDING:
                    old.state = OrderState.RENEWED
                    old.held_fen = 0
        elif order.kind is OrderKind.RELEASE and done:
            target = self.order(order.target_order_id)
            order.state = OrderState.COMPLETED
            order.released_fen = result.amount_released_fen
            if target.state is OrderState.HOLDING:
                target.state = OrderState.RELEASED
                target.held_fen = 0
        elif order.kind is OrderKind.RETURN and done:
            freeze = self.order(order.target_order_id)
            order.state = OrderState.COMPLETED
            order.returned_fen = result.amount_returned_fen
            # validate_execution bounds the amount by what the freeze holds now.
            freeze.held_fen -= result.amount_returned_fen
            freeze.returned_fen += result.amount_returned_fen
            if freeze.held_fen == 0 and freeze.state is OrderState.HOLDING:
                freeze.state = OrderState.RETURNED
        self.record(
            now,
            "order.answered",
            actor,
            f"{order.kind.value} {order.order_id}: {answer_summary(order, result)}",
            message_id=message_id,
            order_id=order.order_id,
        )
        return order

    def expire(self, order_id: str, now: datetime, why: str) -> Order | None:
        """A stop or freeze that ran out its time lapses; its hold must be released."""
        order = self.order(order_id)
        if not order.is_hold or order.state is not OrderState.HOLDING:
            return None
        order.state = OrderState.EXPIRED
        order.held_fen = 0
        self.record(
            now,
            "order.expired",
            HUB_CODE,
            f"{order.kind.value} {order.order_id} lapsed ({why}); {order.addressed_to} must "
            "release the hold",
            order_id=order.order_id,
        )
        return order

    def close_if_settled(self, now: datetime) -> Closure | None:
        """Close once every held fen was returned or released and nothing is pending; None
        while the case stays open.

        A stop or freeze that found nothing to hold (it answered holding ¥0) is still in
        force at its bank when the rest of the money is settled: it lapses with the case
        (`Closure.lapsed`), and its holder must lift it now rather than when its own time runs
        out, since a closed case has no one left to investigate or renew it.
        """
        if self.state is not CaseState.VERIFIED:
            return None
        if any(o.state is OrderState.PENDING for o in self.orders):
            return None
        ever_held = any(o.is_hold and o.amount_held_fen > 0 for o in self.orders)
        if not ever_held or self.held_fen > 0:
            return None
        self.state = CaseState.CLOSED
        self.closed_at = now
        closed = self.record(
            now,
            "case.closed",
            HUB_CODE,
            f"closed: {yuan(self.returned_fen)} returned, {yuan(self.released_fen)} released",
        )
        still_holding = [o for o in self.orders if o.is_hold and o.state is OrderState.HOLDING]
        lapsed = []
        for o in still_holding:
            if self.expire(o.order_id, now, "its case closed with nothing held") is not None:
                # It ends now, and says so: a bank lifts a lapsed hold only once its
                # expire_time has passed by the bank's own clock (docs/signing.md).
                o.expires_at = now
                lapsed.append((o, self.events[-1]))
        return Closure(closed, lapsed)

    # ---- timeline -----------------------------------------------------------------------

    def record(
        self,
        now: datetime,
        kind: str,
        actor: str,
        summary: str,
        *,
        message_id: str = "",
        order_id: str = "",
    ) -> CaseEvent:
        event = CaseEvent(
            sequence=len(self.events) + 1,
            at=now,
            kind=kind,
            actor=actor,
            summary=summary,
            message_id=message_id,
            order_id=order_id,
        )
        self.events.append(event)
        return event


# ---- validation -----------------------------------------------------------------------------


def validate_amount(name: str, amount: int) -> None:
    if amount <= 0:
        raise InvalidArgument(name, f"must be greater than zero fen, got {amount}")
    if amount > MAX_AMOUNT_FEN:
        raise InvalidArgument(
            name, f"{amount} fen is beyond any plausible amount; amounts are in fen"
        )


def validate_past(name: str, at: datetime | None, now: datetime) -> None:
    if at is None:
        raise InvalidArgument(name, "is required")
    if at > now + FUTURE_TOLERANCE:
        raise InvalidArgument(
            name, f"{at.isoformat()} is in the future (hub time {now.isoformat()})"
        )


def validate_account(
    name: str,
    account: AccountRef,
    institutions: Mapping[str, InstitutionKind],
    *,
    need_holder: bool = True,
) -> None:
    kind = institutions.get(account.institution_code)
    if not account.institution_code:
        raise InvalidArgument(f"{name}.institution_code", "is required")
    if kind is None:
        raise InvalidArgument(
            f"{name}.institution_code",
            f"{account.institution_code!r} is not a member institution",
            reason="UNKNOWN_INSTITUTION",
        )
    if not kind.keeps_accounts:
        raise InvalidArgument(
            f"{name}.institution_code",
            f"{account.institution_code} is a {kind.value}, which keeps no accounts",
        )
    if not account.account_number:
        raise InvalidArgument(f"{name}.account_number", "is required")
    if not ACCOUNT_PATTERN.match(account.account_number):
        raise InvalidArgument(
            f"{name}.account_number", "must be 4-40 letters, digits or '-' (no spaces)"
        )
    if need_holder and not account.holder_name.strip():
        raise InvalidArgument(f"{name}.holder_name", "is required")


def validate_report(
    report: Report, reporter: str, now: datetime, institutions: Mapping[str, InstitutionKind]
) -> None:
    if not report.victim_name.strip():
        raise InvalidArgument("victim.name", "is required")
    if not report.fraud_type:
        raise InvalidArgument("fraud_type", "is required")
    if not report.transactions:
        raise InvalidArgument("transactions", "a report names at least one fraudulent transaction")
    if len(report.transactions) > MAX_TRANSACTIONS:
        raise InvalidArgument(
            "transactions", f"at most {MAX_TRANSACTIONS} transactions in one report"
        )
    if report.victim_report_time is not None:
        validate_past("victim_report_time", report.victim_report_time, now)
    for i, t in enumerate(report.transactions):
        p = f"transactions[{i}]"
        validate_past(f"{p}.transaction_time", t.transaction_time, now)
        validate_amount(f"{p}.amount_fen", t.amount_fen)
        validate_account(
            f"{p}.payer",
            AccountRef(t.payer_institution, t.payer_account, t.payer_name),
            institutions,
            need_holder=False,
        )
        validate_account(
            f"{p}.payee",
            AccountRef(t.payee_institution, t.payee_account, t.payee_name),
            institutions,
        )
        if t.payer_institution != reporter:
            raise InvalidArgument(
                f"{p}.payer.institution_code",
                f"the payer account is at {t.payer_institution}, but {reporter} reported it; "
                "an institution reports losses from its own customers' accounts",
            )
        if (t.payer_institution, t.payer_account) == (t.payee_institution, t.payee_account):
            raise InvalidArgument(f"{p}.payee", "payer and payee are the same account")
    payers = {(t.payer_institution, t.payer_account) for t in report.transactions}
    if len(payers) > 1:
        raise InvalidArgument(
            "transactions", "one report covers one victim account; report other accounts apart"
        )


def validate_onward(order: Order, onward: Sequence[OnwardTransfer], now: datetime) -> None:
    """The onward transfers of a hold answer, each named by its position and reference: the
    hub issues downstream stops from them, so one wrong transfer refuses the whole answer."""
    arrived = min((f.transaction_time for f in order.facts), default=None)
    received = sum(f.amount_fen for f in order.facts)
    total = 0
    for i, t in enumerate(onward):
        p = f"onward_transfers[{i}]"
        which = f"transfer {i}" + (f" ({t.reference})" if t.reference else "")
        validate_amount(f"{p}.amount_fen", t.amount_fen)
        validate_past(f"{p}.transfer_time", t.transfer_time, now)
        if not t.to_institution:
            raise InvalidArgument(f"{p}.to_account.institution_code", f"{which}: is required")
        if not CODE_PATTERN.match(t.to_institution):
            # A non-member is fine (beyond reach); a code no institution can have is not.
            raise InvalidArgument(
                f"{p}.to_account.institution_code",
                f"{which}: {t.to_institution[:40]!r} is not an institution code (2-32 capital "
                "letters, digits, '_' or '-'); use the receiving institution's clearing code",
            )
        if not ACCOUNT_PATTERN.match(t.to_account):
            raise InvalidArgument(
                f"{p}.to_account.account_number",
                f"{which}: must be 4-40 letters, digits or '-' (no spaces)",
            )
        if not t.to_holder.strip():
            raise InvalidArgument(
                f"{p}.to_account.holder_name",
                f"{which}: name the receiving account's holder; a downstream stop names it",
            )
        if not 0 <= t.carried_fen <= t.amount_fen:
            raise InvalidArgument(
                f"{p}.carried_fen",
                f"{which}: the part that carried the money is between 0 (all of it) and the "
                f"transfer's {yuan(t.amount_fen)}, got {t.carried_fen}",
            )
        if (t.to_institution, t.to_account) == (order.account_institution, order.account_number):
            raise InvalidArgument(f"{p}.to_account", f"{which}: goes to the stopped account itself")
        if arrived is not None and t.transfer_time < arrived - FUTURE_TOLERANCE:
            raise InvalidArgument(
                f"{p}.transfer_time",
                f"{which}: {t.transfer_time.isoformat()} is before the money arrived "
                f"({arrived.isoformat()}); report only transfers made after the fraudulent "
                "credit",
            )
        total += t.traced_fen
        if received and total > received:
            raise InvalidArgument(
                f"{p}.amount_fen" if not t.carried_fen else f"{p}.carried_fen",
                f"{which}: the transfers reported up to here carry {yuan(total)}, more than "
                f"the {yuan(received)} the account received in the credits the order names; "
                "report the transfers that carried that money (with carried_fen for one "
                "that carried only part of it)",
            )


def validate_execution(order: Order, result: Execution, now: datetime, case: Case) -> None:
    if result.execute_time is not None:
        validate_past("execute_time", result.execute_time, now)
        if result.execute_time < order.issued_at - FUTURE_TOLERANCE:
            raise InvalidArgument(
                "execute_time",
                f"{result.execute_time.isoformat()} is before the order was issued "
                f"({order.issued_at.isoformat()})",
            )
    if result.reason_code and result.reason_code not in REASON_CODES:
        raise InvalidArgument(
            "reason_code",
            f"{result.reason_code!r} is not a known code; use one of "
            + ", ".join(sorted(REASON_CODES)),
        )
    for name, value in (
        ("amount_held_fen", result.amount_held_fen),
        ("available_balance_fen", result.available_balance_fen),
        ("amount_released_fen", result.amount_released_fen),
        ("amount_returned_fen", result.amount_returned_fen),
    ):
        if value < 0:
            raise InvalidArgument(name, f"must not be negative, got {value}")
    status = result.status
    if status in (ExecutionStatus.NO_MATCH, ExecutionStatus.REJECTED):
        if not result.reason_code:
            raise InvalidArgument(
                "reason_code",
                f"a {status.value} answer carries a reason code "
                f"({'NMAT' if status is ExecutionStatus.NO_MATCH else 'AC04, AM04, ARDT, LEGL'})",
            )
        if (
            status is ExecutionStatus.NO_MATCH
            and order.kind is not OrderKind.STOP
            and (order.kind is not OrderKind.FREEZE)
        ):
            raise InvalidArgument(
                "status", f"no match answers a stop or freeze, not a {order.kind.value}"
            )
        if result.amount_held_fen or result.amount_released_fen or result.amount_returned_fen:
            raise InvalidArgument(
                "amount_held_fen", f"a {status.value} answer moves no money; amounts must be 0"
            )
        if result.onward:
            # Taken, they would be dropped unfollowed: only a hold's answer starts a branch.
            raise InvalidArgument(
                "onward_transfers",
                f"a {status.value} answer reports no onward transfers: when the money has "
                "moved on, answer PARTIALLY_EXECUTED with AM04 and the amount held (0 if "
                "none) and list where it went, so that the hub follows it",
            )
        return
    if order.kind in HOLD_KINDS:
        held = result.amount_held_fen
        if held > order.amount_fen:
            raise InvalidArgument(
                "amount_held_fen",
                f"{yuan(held)} exceeds the order's {yuan(order.amount_fen)}; hold up to the "
                "amount, not the whole account",
            )
        if status is ExecutionStatus.EXECUTED and held != order.amount_fen:
            raise InvalidArgument(
                "amount_held_fen",
                f"EXECUTED means the full {yuan(order.amount_fen)} is held, got {yuan(held)}; "
                "answer PARTIALLY_EXECUTED with AM04 when the balance was short",
            )
        if status is ExecutionStatus.PARTIALLY_EXECUTED and held == order.amount_fen:
            raise InvalidArgument("status", "the full amount is held: answer EXECUTED")
        if status is ExecutionStatus.PARTIALLY_EXECUTED and not result.reason_code:
            raise InvalidArgument(
                "reason_code", "a partial hold says why (AM04 when the balance was short)"
            )
        validate_onward(order, result.onward, now)
        return
    if result.onward:
        raise InvalidArgument("onward_transfers", f"a {order.kind.value} answer reports none")
    if order.kind is OrderKind.RELEASE:
        target = case.order(order.target_order_id)
        expected = target.held_fen if target.state is OrderState.HOLDING else 0
        if result.amount_released_fen != expected:
            raise InvalidArgument(
                "amount_released_fen",
                f"a release lifts the whole hold of {target.order_id}: expected "
                f"{yuan(expected)}, got {yuan(result.amount_released_fen)}",
            )
        return
    freeze = case.order(order.target_order_id)
    returned = result.amount_returned_fen
    if returned > order.amount_fen or returned > freeze.held_fen:
        raise InvalidArgument(
            "amount_returned_fen",
            f"{yuan(returned)} exceeds the order's {yuan(order.amount_fen)} or the "
            f"{yuan(freeze.held_fen)} freeze {freeze.order_id} holds",
        )
    if status is ExecutionStatus.EXECUTED and returned != order.amount_fen:
        raise InvalidArgument(
            "amount_returned_fen",
            f"EXECUTED means {yuan(order.amount_fen)} was returned, got {yuan(returned)}",
        )
    if status is ExecutionStatus.PARTIALLY_EXECUTED and (
        returned == order.amount_fen or not result.reason_code
    ):
        raise InvalidArgument(
            "status",
            "PARTIALLY_EXECUTED means less than the amount was returned, with a reason code",
        )


# ---- how orders and answers read on the timeline -------------------------------------


def describe(order: Order) -> str:
    acct = f"{mask(order.account_number)} ({order.holder_name}) at {order.account_institution}"
    match order.kind:
        case OrderKind.STOP:
            return f"hold up to {yuan(order.amount_fen)} in {acct}"
        case OrderKind.FREEZE:
            return (
                f"freeze up to {yuan(order.amount_fen)} in {acct} for {order.term_months} months, "
                f"case {order.filed_case_number}, approved by {order.approving_authority}"
            )
        case OrderKind.RELEASE:
            return f"release {order.target_order_id}"
        case OrderKind.RETURN:
            return f"return {yuan(order.amount_fen)} from {order.target_order_id} to {acct}"


def answer_summary(order: Order, result: Execution) -> str:
    code = f" ({result.reason_code})" if result.reason_code else ""
    match result.status:
        case ExecutionStatus.NO_MATCH:
            return f"no match{code}, nothing held: {result.reason}"
        case ExecutionStatus.REJECTED:
            return f"rejected{code}: {result.reason}"
    if order.kind in HOLD_KINDS:
        onward = sum(t.amount_fen for t in result.onward)
        text = (
            f"holding {yuan(result.amount_held_fen)}{code}, available "
            f"{yuan(result.available_balance_fen)}"
        )
        if result.onward:
            text += f", {len(result.onward)} onward transfer(s) of {yuan(onward)}"
        return text
    if order.kind is OrderKind.RELEASE:
        return f"released {yuan(result.amount_released_fen)}"
    return f"returned {yuan(result.amount_returned_fen)}{code}"


def add_months(at: datetime, months: int) -> datetime:
    """Calendar months, clamped to the month's last day (31 Aug + 6 months = 28/29 Feb)."""
    month_index = at.month - 1 + months
    year = at.year + month_index // 12
    month = month_index % 12 + 1
    days_in_month = [31, 29 if _leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return at.replace(year=year, month=month, day=min(at.day, days_in_month[month - 1]))


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
