"""Fair returns: money frozen in one account goes back to the victims whose money reached it.

Plain Python. Money traceable to one victim goes to that victim. The rest is shared in
proportion to what of each victim's loss reached the account, after a public notice, in fen,
by the largest-remainder method: the shares always add up to exactly what is shared, and no
share exceeds the victim's claim (2016 fund-return rules; DESIGN.md, "Fund return").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from hub.domain.cases import AccountRef
from hub.domain.errors import FailedPrecondition, InvalidArgument
from hub.domain.wording import mask, yuan

PUBLIC_NOTICE = timedelta(days=30)


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` fen in proportion to `weights`, never giving one more than its weight.

    When `total` is at least the sum of the weights every weight is paid in full (the rest is
    not anyone's to take). Otherwise each gets the floor of its exact share and the fen left
    over go one each to the largest remainders; ties go to the larger weight, then to the
    earlier position, so the result is the same on every machine.
    """
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("amounts and weights are never negative")
    whole = sum(weights)
    if total >= whole:
        return list(weights)
    floors = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], -weights[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors


class DistributionState(StrEnum):
    NOTICE = "notice"
    DECIDED = "decided"
    WITHDRAWN = "withdrawn"


class DistributionMethod(StrEnum):
    TRACED = "traced"
    PRO_RATA = "pro_rata"


@dataclass(eq=False)
class Claim:
    """One victim's part: what of their loss reached the account, and their share."""

    case_id: str
    beneficiary_institution: str
    beneficiary_account: str
    beneficiary_name: str
    loss_fen: int
    claim_fen: int
    traced_fen: int = 0
    evidence: str = ""
    share_fen: int = 0
    # Space-separated ids of the return orders that pay the share.
    return_orders: str = ""
    position: int = 0
    distribution_id: str = ""

    @property
    def beneficiary(self) -> AccountRef:
        return AccountRef(
            self.beneficiary_institution, self.beneficiary_account, self.beneficiary_name
        )


@dataclass(eq=False)
class Objection:
    institution: str
    grounds: str
    at: datetime
    message_id: str
    position: int = 0
    distribution_id: str = ""


@dataclass(eq=False)
class Distribution:
    distribution_id: str
    account_institution: str
    account_number: str
    case_id: str
    started_by: str
    started_at: datetime
    message_id: str
    state: DistributionState = DistributionState.NOTICE
    method: DistributionMethod = DistributionMethod.PRO_RATA
    pool_fen: int = 0
    notice_ends_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str = ""
    decision_reason: str = ""
    note: str = ""
    claims: list[Claim] = field(default_factory=list)
    objections: list[Objection] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{mask(self.account_number)} at {self.account_institution}"

    @staticmethod
    def start(
        distribution_id: str,
        account: tuple[str, str],
        case_id: str,
        claims: Sequence[Claim],
        pool_fen: int,
        *,
        started_by: str,
        now: datetime,
        message_id: str,
        note: str = "",
        notice: timedelta = PUBLIC_NOTICE,
    ) -> Distribution:
        if pool_fen <= 0:
            raise FailedPrecondition(
                "NOTHING_FROZEN",
                f"no freeze holds money in {mask(account[1])} at {account[0]}: freeze the "
                "account (or turn its stops into freezes) before sharing what it holds",
            )
        if not claims:
            raise FailedPrecondition(
                "NO_CLAIMS", "no open case's money can have reached the account"
            )
        d = Distribution(
            distribution_id,
            account[0],
            account[1],
            case_id,
            started_by,
            now,
            message_id,
            note=note,
        )
        for i, c in enumerate(claims):
            c.position = i
            d.claims.append(c)
        d.share(pool_fen)
        if d.method is DistributionMethod.PRO_RATA:
            d.notice_ends_at = now + notice
        return d

    def share(self, pool_fen: int) -> None:
        """Compute every share from the pool held now: traced money first, the rest pro rata."""
        for c in self.claims:
            if c.traced_fen > c.claim_fen:
                raise InvalidArgument(
                    "traced",
                    f"{yuan(c.traced_fen)} traced to case {c.case_id} is more than the "
                    f"{yuan(c.claim_fen)} of its loss that can have reached {self.where}",
                )
        traced = sum(c.traced_fen for c in self.claims)
        if traced > pool_fen:
            raise InvalidArgument(
                "traced",
                f"{yuan(traced)} traced in all is more than the {yuan(pool_fen)} frozen in "
                f"{self.where}",
            )
        rest = largest_remainder(
            pool_fen - traced, [c.claim_fen - c.traced_fen for c in self.claims]
        )
        for c, extra in zip(self.claims, rest, strict=True):
            c.share_fen = c.traced_fen + extra
        self.pool_fen = pool_fen
        mixed = len(self.claims) > 1 and pool_fen > traced
        self.method = DistributionMethod.PRO_RATA if mixed else DistributionMethod.TRACED

    def object(self, institution: str, grounds: str, now: datetime, message_id: str) -> None:
        if self.state is not DistributionState.NOTICE:
            raise FailedPrecondition(
                "NOT_UNDER_NOTICE",
                f"distribution {self.distribution_id} is {self.state.value}; objections are "
                "recorded during its public notice only",
            )
        if self.notice_ends_at is not None and now >= self.notice_ends_at:
            raise FailedPrecondition(
                "NOTICE_ENDED",
                f"the public notice of {self.distribution_id} ended at "
                f"{self.notice_ends_at.isoformat()}; the centre decides it now",
            )
        if not grounds.strip():
            raise InvalidArgument("grounds", "say what the objection is")
        self.objections.append(
            Objection(institution, grounds.strip(), now, message_id, len(self.objections))
        )

    def check_decidable(self, now: datetime, reason: str) -> None:
        if self.state is not DistributionState.NOTICE:
            raise FailedPrecondition(
                "ALREADY_DECIDED",
                f"distribution {self.distribution_id} is already {self.state.value}",
            )
        if self.notice_ends_at is not None and now < self.notice_ends_at:
            raise FailedPrecondition(
                "NOTICE_RUNNING",
                f"the public notice of {self.distribution_id} runs until "
                f"{self.notice_ends_at.isoformat()}; decide after it, with any objections",
            )
        if self.objections and not reason.strip():
            raise InvalidArgument(
                "reason",
                f"{len(self.objections)} objection(s) were filed: say how the decision "
                "answers them",
            )

    def decide(self, by: str, now: datetime, reason: str) -> None:
        self.state = DistributionState.DECIDED
        self.decided_at = now
        self.decided_by = by
        self.decision_reason = reason.strip()

    def withdraw(self, by: str, now: datetime, reason: str) -> None:
        if self.state is not DistributionState.NOTICE:
            raise FailedPrecondition(
                "ALREADY_DECIDED",
                f"distribution {self.distribution_id} is already {self.state.value}",
            )
        if not reason.strip():
            raise InvalidArgument("reason", "say why the distribution is withdrawn")
        self.state = DistributionState.WITHDRAWN
        self.decided_at = now
        self.decided_by = by
        self.decision_reason = reason.strip()

    def summary(self) -> str:
        parts = ", ".join(f"{c.case_id} {yuan(c.share_fen)}" for c in self.claims)
        return (
            f"{self.method.value.replace('_', ' ')} distribution {self.distribution_id} of "
            f"{yuan(self.pool_fen)} frozen in {self.where}: {parts}"
        )
