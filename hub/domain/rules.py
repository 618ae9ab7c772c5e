"""The anti-fraud centre's standing auto-stop rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hub.domain.cases import Case, StopCommand, validate_amount
from hub.domain.errors import InvalidArgument
from hub.domain.trail import DEFAULT_MAX_LAYER, FollowRule

# Deeper than this, a chain of accounts is the centre's to follow, whatever the rule says.
MAX_LAYER_LIMIT = 20


@dataclass(eq=False)
class AutoStopRule:
    """Under this rule the hub issues, in the centre's name, a stop to each layer-1 account
    the moment a report is verified, for the loss that entered it, up to max_amount_fen."""

    centre_code: str
    rule_id: str
    enabled: bool
    max_amount_fen: int
    updated_at: datetime
    message_id: str
    envelope: bytes
    # Follow onward transfers with downstream stops, down to this layer (0: the default).
    follow_onward: bool = False
    max_layer: int = 0

    @staticmethod
    def validated(
        centre_code: str,
        rule_id: str,
        enabled: bool,
        max_amount_fen: int,
        *,
        now: datetime,
        message_id: str,
        envelope: bytes,
        follow_onward: bool = False,
        max_layer: int = 0,
    ) -> AutoStopRule:
        if not rule_id.strip():
            raise InvalidArgument("rule_id", "name the rule; orders record it")
        if enabled:
            validate_amount("max_amount_fen", max_amount_fen)
        if not 0 <= max_layer <= MAX_LAYER_LIMIT or max_layer == 1:
            raise InvalidArgument(
                "max_layer",
                f"{max_layer}: downstream stops start at layer 2; give 2 to {MAX_LAYER_LIMIT}, "
                f"or 0 for the default ({DEFAULT_MAX_LAYER})",
            )
        return AutoStopRule(
            centre_code,
            rule_id,
            enabled,
            max_amount_fen,
            now,
            message_id,
            envelope,
            follow_onward,
            max_layer,
        )

    def follow_rule(self) -> FollowRule:
        """How far the hub follows onward transfers in the centre's name under this rule."""
        return FollowRule(
            self.enabled and self.follow_onward,
            self.max_layer or DEFAULT_MAX_LAYER,
            self.max_amount_fen,
        )

    def stops_for(self, case: Case) -> tuple[list[StopCommand], list[str]]:
        """The stops this rule authorises for a verified case, and why others were left out."""
        stops: list[StopCommand] = []
        skipped: list[str] = []
        if not self.enabled:
            return stops, skipped
        for account, transactions in case.payee_accounts():
            amount = sum(t.amount_fen for t in transactions)
            if amount > self.max_amount_fen:
                skipped.append(
                    f"{account.institution_code} account ending {account.account_number[-4:]}: "
                    f"loss above the rule's limit, waiting for the centre"
                )
                continue
            stops.append(
                StopCommand(
                    account=account,
                    amount_fen=amount,
                    transactions=[(t.transaction_time, t.amount_fen) for t in transactions],
                )
            )
        return stops, skipped
