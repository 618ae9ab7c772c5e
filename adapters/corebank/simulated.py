"""An in-process core bank and interbank payment network for the demo and the tests.

It keeps real books: every account has a balance, a statement of transfers in and out,
and liens (holds) that make part of the balance unspendable. Money enters the system only
when an account is opened with a balance; after that it only moves, so the total across
all banks on a network is conserved, and the tests check that it is.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from adapters.corebank.ports import (
    AC01,
    AC04,
    AM04,
    ARDT,
    BE01,
    LEGL,
    NMAT,
    Clock,
    HoldKind,
    HoldOutcome,
    HoldStatus,
    OnwardTransfer,
    PayOutcome,
    ReleaseOutcome,
)


class CoreBankingError(Exception):
    """A request the core bank refuses outright (as opposed to an order it answers)."""


class UnknownAccount(CoreBankingError):
    pass


class AccountClosed(CoreBankingError):
    pass


class InsufficientFunds(CoreBankingError):
    pass


class HolderMismatch(CoreBankingError):
    """The payee name given with a transfer is not the receiving account's holder."""


class UnknownInstitution(CoreBankingError):
    pass


class AccountHasHolds(CoreBankingError):
    """An account under a lien cannot be closed: the held money would escape the order."""


class Direction(StrEnum):
    IN = "IN"
    OUT = "OUT"


class HoldState(StrEnum):
    ACTIVE = "ACTIVE"
    RELEASED = "RELEASED"
    PAID_OUT = "PAID_OUT"
    TAKEN_OVER = "TAKEN_OVER"


@dataclass(frozen=True, slots=True)
class StatementEntry:
    time: datetime
    direction: Direction
    amount_fen: int
    counterparty_institution: str
    counterparty_account: str
    counterparty_holder: str
    reference: str


@dataclass(frozen=True, slots=True)
class HoldInfo:
    ref: str
    kind: HoldKind
    account_number: str
    requested_fen: int
    held_fen: int
    placed_at: datetime
    state: HoldState
    ended_at: datetime | None
    ended_by: str  # the freeze that took a stop over, or "" otherwise


@dataclass(slots=True)
class _Account:
    number: str
    holder_name: str
    balance_fen: int
    closed: bool = False
    entries: list[StatementEntry] = field(default_factory=list)


@dataclass(slots=True)
class _Hold:
    ref: str
    kind: HoldKind
    account_number: str
    requested_fen: int
    held_fen: int
    placed_at: datetime
    state: HoldState = HoldState.ACTIVE
    ended_at: datetime | None = None
    ended_by: str = ""

    def info(self) -> HoldInfo:
        return HoldInfo(
            ref=self.ref,
            kind=self.kind,
            account_number=self.account_number,
            requested_fen=self.requested_fen,
            held_fen=self.held_fen,
            placed_at=self.placed_at,
            state=self.state,
            ended_at=self.ended_at,
            ended_by=self.ended_by,
        )


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d} yuan"


def _now(clock: Clock) -> datetime:
    now = clock()
    if now.tzinfo is None:
        # Naive and aware datetimes do not compare; failing here names the real culprit.
        raise ValueError("clock returned a naive datetime; it must be timezone-aware UTC")
    return now


def _require_positive(name: str, fen: int) -> None:
    if isinstance(fen, bool) or not isinstance(fen, int) or fen <= 0:
        raise ValueError(f"{name} must be a positive int of fen, got {fen!r}")


def _not_held(status: HoldStatus, code: str, reason: str) -> HoldOutcome:
    return HoldOutcome(
        status=status, reason_code=code, reason=reason, held_fen=0, available_fen=0, onward=()
    )


def _match_distinct(candidates: list[list[int]]) -> list[int] | None:
    """Assign each fact a distinct recorded credit, or None if no such assignment exists.

    Greedy first-fit can fail where an assignment exists (two facts near the same
    credit), so this is Kuhn's augmenting-path bipartite matching.
    """
    owner: dict[int, int] = {}

    def assign(fact: int, seen: set[int]) -> bool:
        for credit in candidates[fact]:
            if credit in seen:
                continue
            seen.add(credit)
            if credit not in owner or assign(owner[credit], seen):
                owner[credit] = fact
                return True
        return False

    for fact in range(len(candidates)):
        if not assign(fact, set()):
            return None
    chosen = [0] * len(candidates)
    for credit, fact in owner.items():
        chosen[fact] = credit
    return chosen


class SimulatedCoreBank:
    """One institution's core banking: accounts, liens, and the `CoreBanking` port."""

    def __init__(
        self,
        institution_code: str,
        clock: Clock,
        *,
        match_tolerance: timedelta = timedelta(minutes=2),
    ) -> None:
        if match_tolerance < timedelta(0):
            raise ValueError("match_tolerance must not be negative")
        self.institution_code = institution_code
        self._clock = clock
        self._tolerance = match_tolerance
        self._accounts: dict[str, _Account] = {}
        self._holds: dict[str, _Hold] = {}
        self._network: PaymentNetwork | None = None
        # Replaced by the network's lock on register(), so that a transfer touching two
        # banks and a pay-out from a hold are atomic against every other bank operation.
        self._lock = threading.RLock()
        self._hold_answers: dict[str, tuple[HoldKind, HoldOutcome]] = {}
        self._release_answers: dict[str, ReleaseOutcome] = {}
        self._pay_answers: dict[tuple[str, str], PayOutcome] = {}

    # -- scenario setup and inspection ------------------------------------------------

    @property
    def network(self) -> PaymentNetwork | None:
        return self._network

    def open_account(self, number: str, holder_name: str, balance_fen: int = 0) -> None:
        if isinstance(balance_fen, bool) or not isinstance(balance_fen, int) or balance_fen < 0:
            raise ValueError(f"opening balance must be a non-negative int of fen: {balance_fen!r}")
        with self._lock:
            if number in self._accounts:
                raise ValueError(f"account {number} already exists at {self.institution_code}")
            self._accounts[number] = _Account(number, holder_name, balance_fen)

    def close_account(self, number: str) -> None:
        with self._lock:
            account = self._open(number)
            if self._active_holds(number):
                raise AccountHasHolds(f"account {number} has active holds")
            account.closed = True

    def is_closed(self, number: str) -> bool:
        with self._lock:
            return self._get(number).closed

    def account_holder(self, number: str) -> str:
        """The holder of an open account (the network checks payee names with this)."""
        with self._lock:
            return self._open(number).holder_name

    def accounts(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._accounts)

    def balance(self, number: str) -> int:
        with self._lock:
            return self._get(number).balance_fen

    def held(self, number: str) -> int:
        with self._lock:
            self._get(number)
            return sum(h.held_fen for h in self._active_holds(number))

    def available(self, number: str) -> int:
        with self._lock:
            return self._available(self._get(number))

    def holds(self, number: str) -> list[HoldInfo]:
        """Active holds on the account, oldest first."""
        with self._lock:
            self._get(number)
            return [h.info() for h in self._active_holds(number)]

    def hold(self, hold_ref: str) -> HoldInfo | None:
        """Any hold ever placed under this ref, active or ended."""
        with self._lock:
            h = self._holds.get(hold_ref)
            return None if h is None else h.info()

    def statement(self, number: str) -> list[StatementEntry]:
        with self._lock:
            return list(self._get(number).entries)

    def transfer(
        self,
        from_account: str,
        to_institution: str,
        to_account: str,
        amount_fen: int,
        *,
        reference: str | None = None,
    ) -> str:
        """The holder spends money: only the available balance can leave."""
        return self._require_network().transfer(
            self.institution_code,
            from_account,
            to_institution,
            to_account,
            amount_fen,
            reference=reference,
        )

    # -- postings, called by PaymentNetwork under its lock ------------------------------

    def post_debit(
        self,
        number: str,
        amount_fen: int,
        *,
        time: datetime,
        reference: str,
        to_institution: str,
        to_account: str,
        to_holder: str,
    ) -> None:
        _require_positive("amount_fen", amount_fen)
        with self._lock:
            account = self._open(number)
            available = self._available(account)
            if amount_fen > available:
                raise InsufficientFunds(
                    f"account {number} has {_yuan(available)} available, "
                    f"{_yuan(amount_fen)} requested"
                )
            account.balance_fen -= amount_fen
            account.entries.append(
                StatementEntry(
                    time,
                    Direction.OUT,
                    amount_fen,
                    to_institution,
                    to_account,
                    to_holder,
                    reference,
                )
            )

    def post_credit(
        self,
        number: str,
        amount_fen: int,
        *,
        time: datetime,
        reference: str,
        from_institution: str,
        from_account: str,
        from_holder: str,
    ) -> None:
        _require_positive("amount_fen", amount_fen)
        with self._lock:
            account = self._open(number)
            account.balance_fen += amount_fen
            account.entries.append(
                StatementEntry(
                    time,
                    Direction.IN,
                    amount_fen,
                    from_institution,
                    from_account,
                    from_holder,
                    reference,
                )
            )

    # -- the CoreBanking port ------------------------------------------------------------

    def place_hold(
        self,
        hold_ref: str,
        *,
        holder_name: str,
        account_number: str,
        amount_fen: int,
        credits: Sequence[tuple[datetime, int]],
    ) -> HoldOutcome:
        with self._lock:
            answered = self._answered(hold_ref, HoldKind.STOP)
            if answered is not None:
                return answered
            _require_positive("amount_fen", amount_fen)
            for time, fen in credits:
                if time.tzinfo is None:
                    raise ValueError("credit times must be timezone-aware")
                _require_positive("credit amount", fen)
            outcome = self._stop(hold_ref, holder_name, account_number, amount_fen, credits)
            self._hold_answers[hold_ref] = (HoldKind.STOP, outcome)
            return outcome

    def freeze(
        self,
        hold_ref: str,
        *,
        holder_name: str,
        account_number: str,
        amount_fen: int,
        takes_over: str | None,
    ) -> HoldOutcome:
        with self._lock:
            answered = self._answered(hold_ref, HoldKind.FREEZE)
            if answered is not None:
                return answered
            _require_positive("amount_fen", amount_fen)
            outcome = self._freeze(hold_ref, holder_name, account_number, amount_fen, takes_over)
            self._hold_answers[hold_ref] = (HoldKind.FREEZE, outcome)
            return outcome

    def release_hold(self, hold_ref: str) -> ReleaseOutcome:
        with self._lock:
            answered = self._release_answers.get(hold_ref)
            if answered is not None:
                return answered
            outcome = self._release(hold_ref)
            self._release_answers[hold_ref] = outcome
            return outcome

    def pay_from_hold(
        self,
        hold_ref: str,
        *,
        amount_fen: int,
        beneficiary_institution: str,
        beneficiary_account: str,
        beneficiary_name: str,
        reference: str,
    ) -> PayOutcome:
        network = self._require_network()
        # The network lock first, then ours: the same order network.transfer takes them,
        # so two banks paying each other at once cannot deadlock.
        with network.lock, self._lock:
            key = (hold_ref, reference)
            answered = self._pay_answers.get(key)
            if answered is not None:
                return answered
            _require_positive("amount_fen", amount_fen)
            outcome = self._pay(
                network,
                hold_ref,
                amount_fen,
                beneficiary_institution,
                beneficiary_account,
                beneficiary_name,
                reference,
            )
            self._pay_answers[key] = outcome
            return outcome

    # -- order logic (caller holds the lock) ---------------------------------------------

    def _answered(self, hold_ref: str, kind: HoldKind) -> HoldOutcome | None:
        previous = self._hold_answers.get(hold_ref)
        if previous is None:
            return None
        previous_kind, outcome = previous
        if previous_kind is not kind:
            raise ValueError(
                f"hold_ref {hold_ref} was already used for a {previous_kind.value.lower()}"
            )
        return outcome

    def _matching_account(self, holder_name: str, account_number: str) -> _Account | HoldOutcome:
        account = self._accounts.get(account_number)
        if account is None:
            return _not_held(
                HoldStatus.NO_MATCH,
                NMAT,
                f"account number {account_number} does not exist at {self.institution_code}",
            )
        if account.closed:
            return _not_held(HoldStatus.REJECTED, AC04, f"account {account_number} is closed")
        if account.holder_name != holder_name:
            return _not_held(
                HoldStatus.NO_MATCH, NMAT, "holder name does not match the account's records"
            )
        return account

    def _stop(
        self,
        hold_ref: str,
        holder_name: str,
        account_number: str,
        amount_fen: int,
        credits: Sequence[tuple[datetime, int]],
    ) -> HoldOutcome:
        found = self._matching_account(holder_name, account_number)
        if isinstance(found, HoldOutcome):
            return found
        account = found
        if not credits:
            # The transaction time and amount are two of the four facts; without them
            # nothing ties this account to the fraud, so the bank must not stop it.
            return _not_held(HoldStatus.NO_MATCH, NMAT, "the order names no transaction to match")
        incoming = [e for e in account.entries if e.direction is Direction.IN]
        candidates: list[list[int]] = []
        for time, fen in credits:
            near = [
                i
                for i, e in enumerate(incoming)
                if e.amount_fen == fen and abs(e.time - time) <= self._tolerance
            ]
            if not near:
                return _not_held(
                    HoldStatus.NO_MATCH,
                    NMAT,
                    f"no incoming credit of {_yuan(fen)} within {self._tolerance} of "
                    f"{time.isoformat()}",
                )
            candidates.append(near)
        chosen = _match_distinct(candidates)
        if chosen is None:
            return _not_held(
                HoldStatus.NO_MATCH,
                NMAT,
                f"the {len(credits)} transactions named cannot each be matched to a "
                "different incoming credit",
            )
        fraud_time = min(incoming[i].time for i in chosen)
        # The stopped money is traced out of the account first (a mule forwards what lands):
        # each transfer after it carries what of that money is left, and once it is all
        # gone later transfers carried other money and are not this order's business.
        left = sum(incoming[i].amount_fen for i in chosen)
        traced: list[OnwardTransfer] = []
        for e in sorted(account.entries, key=lambda e: e.time):
            if e.direction is not Direction.OUT or e.time < fraud_time or left == 0:
                continue
            carried = min(e.amount_fen, left)
            left -= carried
            traced.append(
                OnwardTransfer(
                    time=e.time,
                    amount_fen=e.amount_fen,
                    to_institution=e.counterparty_institution,
                    to_account=e.counterparty_account,
                    to_holder=e.counterparty_holder,
                    reference=e.reference,
                    carried_fen=carried if carried < e.amount_fen else 0,
                )
            )
        onward = tuple(traced)
        held = min(amount_fen, self._available(account))
        self._holds[hold_ref] = _Hold(
            hold_ref, HoldKind.STOP, account_number, amount_fen, held, _now(self._clock)
        )
        return self._held_outcome(account, amount_fen, held, onward, "")

    def _freeze(
        self,
        hold_ref: str,
        holder_name: str,
        account_number: str,
        amount_fen: int,
        takes_over: str | None,
    ) -> HoldOutcome:
        found = self._matching_account(holder_name, account_number)
        if isinstance(found, HoldOutcome):
            return found
        account = found
        now = _now(self._clock)
        carried = 0
        note = ""
        if takes_over is not None:
            previous = self._holds.get(takes_over)
            if (
                previous is not None
                and previous.state is HoldState.ACTIVE
                and previous.account_number == account_number
            ):
                # The stop's money moves into the freeze rather than being held twice;
                # any excess over the freeze amount goes back to the holder.
                carried = min(previous.held_fen, amount_fen)
                previous.state = HoldState.TAKEN_OVER
                previous.ended_at = now
                previous.ended_by = hold_ref
                note = f"; carried {_yuan(carried)} over from hold {takes_over}"
            else:
                note = f"; hold {takes_over} is not active on this account, nothing carried over"
        # With the old hold ended, its carried money shows as available: exclude it.
        free = self._available(account) - carried
        held = carried + min(amount_fen - carried, free)
        self._holds[hold_ref] = _Hold(
            hold_ref, HoldKind.FREEZE, account_number, amount_fen, held, now
        )
        return self._held_outcome(account, amount_fen, held, (), note)

    def _held_outcome(
        self,
        account: _Account,
        amount_fen: int,
        held: int,
        onward: tuple[OnwardTransfer, ...],
        note: str,
    ) -> HoldOutcome:
        if held < amount_fen:
            status, code = HoldStatus.PARTIAL, AM04
            reason = (
                f"held {_yuan(held)} of {_yuan(amount_fen)}: insufficient available funds{note}"
            )
        else:
            status, code = HoldStatus.EXECUTED, ""
            reason = f"held {_yuan(held)}{note}"
        return HoldOutcome(
            status=status,
            reason_code=code,
            reason=reason,
            held_fen=held,
            available_fen=self._available(account),
            onward=onward,
        )

    def _ended_reason(self, hold: _Hold) -> str:
        when = hold.ended_at.isoformat() if hold.ended_at else "earlier"
        if hold.state is HoldState.RELEASED:
            return f"hold {hold.ref} was already released at {when}"
        if hold.state is HoldState.PAID_OUT:
            return f"hold {hold.ref} was already paid out in full at {when}"
        return f"hold {hold.ref} was taken over by freeze {hold.ended_by} at {when}"

    def _release(self, hold_ref: str) -> ReleaseOutcome:
        hold = self._holds.get(hold_ref)
        if hold is None:
            previous = self._hold_answers.get(hold_ref)
            reason = (
                f"hold {hold_ref} was never placed: {previous[1].reason}"
                if previous is not None
                else f"no hold {hold_ref} at {self.institution_code}"
            )
            return ReleaseOutcome(HoldStatus.REJECTED, NMAT, reason, 0)
        if hold.state is not HoldState.ACTIVE:
            return ReleaseOutcome(HoldStatus.REJECTED, ARDT, self._ended_reason(hold), 0)
        released = hold.held_fen
        hold.state = HoldState.RELEASED
        hold.ended_at = _now(self._clock)
        return ReleaseOutcome(
            HoldStatus.EXECUTED, "", f"released {_yuan(released)} to the holder", released
        )

    def _pay(
        self,
        network: PaymentNetwork,
        hold_ref: str,
        amount_fen: int,
        beneficiary_institution: str,
        beneficiary_account: str,
        beneficiary_name: str,
        reference: str,
    ) -> PayOutcome:
        hold = self._holds.get(hold_ref)
        if hold is None:
            return PayOutcome(
                HoldStatus.REJECTED, NMAT, f"no hold {hold_ref} at {self.institution_code}", 0
            )
        if hold.kind is not HoldKind.FREEZE:
            return PayOutcome(
                HoldStatus.REJECTED,
                LEGL,
                f"hold {hold_ref} is a stop; money is returned only from a freeze",
                0,
            )
        if hold.state is not HoldState.ACTIVE:
            return PayOutcome(HoldStatus.REJECTED, ARDT, self._ended_reason(hold), 0)
        if hold.held_fen == 0:
            return PayOutcome(HoldStatus.REJECTED, ARDT, f"hold {hold_ref} holds nothing", 0)
        paid = min(amount_fen, hold.held_fen)
        # Lifting the lien by the amount first is what lets the network debit it; the
        # shared lock keeps anyone else from spending it in between.
        hold.held_fen -= paid
        try:
            network.transfer(
                self.institution_code,
                hold.account_number,
                beneficiary_institution,
                beneficiary_account,
                paid,
                reference=reference,
                to_holder=beneficiary_name,
            )
        except CoreBankingError as refused:
            hold.held_fen += paid
            code = {
                AccountClosed: AC04,
                HolderMismatch: BE01,
            }.get(type(refused), AC01)
            return PayOutcome(
                HoldStatus.REJECTED, code, f"beneficiary refused the payment: {refused}", 0
            )
        if hold.held_fen == 0:
            hold.state = HoldState.PAID_OUT
            hold.ended_at = _now(self._clock)
        if paid < amount_fen:
            return PayOutcome(
                HoldStatus.PARTIAL,
                AM04,
                f"returned {_yuan(paid)} of {_yuan(amount_fen)}: the hold held no more",
                paid,
            )
        return PayOutcome(HoldStatus.EXECUTED, "", f"returned {_yuan(paid)}", paid)

    # -- helpers -------------------------------------------------------------------------

    def _join(self, network: PaymentNetwork) -> None:
        if self._network is not None and self._network is not network:
            raise ValueError(f"{self.institution_code} is already on another payment network")
        self._network = network
        self._lock = network.lock

    def _require_network(self) -> PaymentNetwork:
        if self._network is None:
            raise CoreBankingError(f"{self.institution_code} is not on a payment network")
        return self._network

    def _get(self, number: str) -> _Account:
        account = self._accounts.get(number)
        if account is None:
            raise UnknownAccount(f"no account {number} at {self.institution_code}")
        return account

    def _open(self, number: str) -> _Account:
        account = self._get(number)
        if account.closed:
            raise AccountClosed(f"account {number} at {self.institution_code} is closed")
        return account

    def _active_holds(self, number: str) -> list[_Hold]:
        return [
            h
            for h in self._holds.values()
            if h.account_number == number and h.state is HoldState.ACTIVE
        ]

    def _available(self, account: _Account) -> int:
        return account.balance_fen - sum(h.held_fen for h in self._active_holds(account.number))


class PaymentNetwork:
    """The interbank network: moves money between accounts at registered banks."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._banks: dict[str, SimulatedCoreBank] = {}
        self._sequence = 0
        self.lock = threading.RLock()

    def register(self, bank: SimulatedCoreBank) -> None:
        with self.lock:
            existing = self._banks.get(bank.institution_code)
            if existing is bank:
                return
            if existing is not None:
                raise ValueError(f"institution {bank.institution_code} is already registered")
            bank._join(self)
            self._banks[bank.institution_code] = bank

    def bank(self, institution_code: str) -> SimulatedCoreBank:
        try:
            return self._banks[institution_code]
        except KeyError:
            raise UnknownInstitution(
                f"no institution {institution_code} on the payment network"
            ) from None

    def institutions(self) -> tuple[str, ...]:
        return tuple(self._banks)

    def total_fen(self) -> int:
        """All money on the network; transfers never change it."""
        with self.lock:
            return sum(
                bank.balance(number) for bank in self._banks.values() for number in bank.accounts()
            )

    def transfer(
        self,
        from_institution: str,
        from_account: str,
        to_institution: str,
        to_account: str,
        amount_fen: int,
        *,
        reference: str | None = None,
        to_holder: str | None = None,
    ) -> str:
        """Move money; returns the reference both statement entries carry.

        `to_holder`, when given, must be the receiving account's holder, as interbank
        payments in China are checked on name and number together.
        """
        _require_positive("amount_fen", amount_fen)
        with self.lock:
            sender = self.bank(from_institution)
            receiver = self.bank(to_institution)
            if (from_institution, from_account) == (to_institution, to_account):
                raise ValueError("cannot transfer an account's money to itself")
            # Every check that can refuse the receiving side runs before the debit, so a
            # refused transfer leaves both books untouched.
            payee = receiver.account_holder(to_account)
            if to_holder is not None and to_holder != payee:
                raise HolderMismatch(
                    f"account {to_account} at {to_institution} is not held by {to_holder}"
                )
            payer = sender.account_holder(from_account)
            if reference is None:
                self._sequence += 1
                reference = f"TRF{self._sequence:06d}"
            time = _now(self._clock)
            sender.post_debit(
                from_account,
                amount_fen,
                time=time,
                reference=reference,
                to_institution=to_institution,
                to_account=to_account,
                to_holder=payee,
            )
            receiver.post_credit(
                to_account,
                amount_fen,
                time=time,
                reference=reference,
                from_institution=from_institution,
                from_account=from_account,
                from_holder=payer,
            )
            return reference


__all__ = [
    "AccountClosed",
    "AccountHasHolds",
    "CoreBankingError",
    "Direction",
    "HoldInfo",
    "HoldState",
    "HolderMismatch",
    "InsufficientFunds",
    "PaymentNetwork",
    "SimulatedCoreBank",
    "StatementEntry",
    "UnknownAccount",
    "UnknownInstitution",
]
