"""The core-banking port a bank agent carries out hub orders through.

A real deployment implements `CoreBanking` against the institution's core system; the
demo and the tests use `adapters.corebank.simulated.SimulatedCoreBank`. Every amount is
an int in fen (0.01 yuan): floats never touch money.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime."""

# ISO 20022 external codes where one fits; NMAT is ours because ISO has no code for
# "the four facts of a stop do not match our records".
AM04 = "AM04"  # insufficient funds: less than the ordered amount could be held or paid
AC04 = "AC04"  # account closed
AC01 = "AC01"  # incorrect account number (a beneficiary the network cannot find)
BE01 = "BE01"  # beneficiary name inconsistent with the account
ARDT = "ARDT"  # already returned: the hold has ended or holds nothing more to pay out
LEGL = "LEGL"  # legal decision: the order is not allowed on this kind of hold
NMAT = "NMAT"  # no match of the four facts, or no such hold


class HoldStatus(StrEnum):
    EXECUTED = "EXECUTED"
    PARTIAL = "PARTIAL"
    NO_MATCH = "NO_MATCH"
    REJECTED = "REJECTED"


class HoldKind(StrEnum):
    STOP = "STOP"
    FREEZE = "FREEZE"


@dataclass(frozen=True, slots=True)
class OnwardTransfer:
    """Money that left the stopped account after the fraudulent credit arrived."""

    time: datetime
    amount_fen: int
    to_institution: str
    to_account: str
    to_holder: str
    reference: str
    # What of amount_fen was the stopped money, when the transfer also moved other money
    # (0: all of it). The stopped money is traced as leaving first.
    carried_fen: int = 0


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """The bank's answer to a stop or a freeze.

    `held_fen` and `available_fen` are 0 whenever nothing was held (NO_MATCH, REJECTED):
    an institution must not disclose the balance of an account the order did not match.
    """

    status: HoldStatus
    reason_code: str
    reason: str
    held_fen: int
    available_fen: int
    onward: tuple[OnwardTransfer, ...]


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    status: HoldStatus
    reason_code: str
    reason: str
    released_fen: int


@dataclass(frozen=True, slots=True)
class PayOutcome:
    status: HoldStatus
    reason_code: str
    reason: str
    returned_fen: int


class CoreBanking(Protocol):
    """What a bank agent needs from the institution's core system.

    Every call is idempotent: orders may be redelivered, so repeating a call for an
    operation already processed returns the original outcome and changes nothing.
    Holds and freezes are keyed by `hold_ref`, releases by the `hold_ref` they release,
    payments by (`hold_ref`, `reference`) so one freeze can repay several victims.
    """

    institution_code: str

    def place_hold(
        self,
        hold_ref: str,
        *,
        holder_name: str,
        account_number: str,
        amount_fen: int,
        credits: Sequence[tuple[datetime, int]],
    ) -> HoldOutcome:
        """Stop: hold up to `amount_fen` only if the account, holder and credits all match."""
        ...

    def freeze(
        self,
        hold_ref: str,
        *,
        holder_name: str,
        account_number: str,
        amount_fen: int,
        takes_over: str | None,
    ) -> HoldOutcome:
        """Freeze up to `amount_fen`, carrying over the stop `takes_over` if it is active."""
        ...

    def release_hold(self, hold_ref: str) -> ReleaseOutcome:
        """End an active stop or freeze; the money it held becomes available again."""
        ...

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
        """Return frozen money to a victim through the interbank payment network."""
        ...


__all__ = [
    "AC01",
    "AC04",
    "AM04",
    "ARDT",
    "BE01",
    "LEGL",
    "NMAT",
    "Clock",
    "CoreBanking",
    "HoldKind",
    "HoldOutcome",
    "HoldStatus",
    "OnwardTransfer",
    "PayOutcome",
    "ReleaseOutcome",
]
