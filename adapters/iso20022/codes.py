"""The ISO 20022 codes the bridge writes and reads, and their StopHub meaning.

Only what is listed here is mapped; anything else raises `UnsupportedCode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

from adapters.iso20022.errors import UnsupportedCode
from stophub.v1 import order_pb2

CURRENCY: Final = "CNY"
"""StopHub amounts are integer fen of renminbi; the ISO amounts are CNY with 2 decimals."""

CANCELLATION_REASON: Final = "FRAD"
"""camt.056 CxlRsnInf/Rsn/Cd (ExternalCancellationReason1Code): fraudulent origin."""

# camt.029 Sts/Conf (ExternalInvestigationExecutionConfirmation1Code) per StopHub status.
CNCL: Final = "CNCL"  # cancelled as per request: done in full
PECR: Final = "PECR"  # partially executed cancellation request: done for less than asked
RJCR: Final = "RJCR"  # rejected cancellation request: not done (no match, or a reason)

_Status: TypeAlias = order_pb2.ExecutionStatus.ValueType

CONFIRMATION: Final[Mapping[_Status, str]] = MappingProxyType(
    {
        order_pb2.EXECUTION_STATUS_EXECUTED: CNCL,
        order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED: PECR,
        order_pb2.EXECUTION_STATUS_NO_MATCH: RJCR,
        order_pb2.EXECUTION_STATUS_REJECTED: RJCR,
    }
)
"""StopHub execution status -> camt.029 Sts/Conf."""

# camt.029 TxInfAndSts/TxCxlSts (CancellationIndividualStatus1Code) and
# OrgnlGrpInfAndSts/GrpCxlSts (GroupCancellationStatus1Code) per StopHub status.
TX_STATUS: Final[Mapping[_Status, str]] = MappingProxyType(
    {
        order_pb2.EXECUTION_STATUS_EXECUTED: "ACCR",
        order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED: "ACCR",
        order_pb2.EXECUTION_STATUS_NO_MATCH: "RJCR",
        order_pb2.EXECUTION_STATUS_REJECTED: "RJCR",
    }
)
GROUP_STATUS: Final[Mapping[_Status, str]] = MappingProxyType(
    {
        order_pb2.EXECUTION_STATUS_EXECUTED: "ACCR",
        order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED: "PACR",
        order_pb2.EXECUTION_STATUS_NO_MATCH: "RJCR",
        order_pb2.EXECUTION_STATUS_REJECTED: "RJCR",
    }
)

ISO_REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "AC04": "closed account number",
        "AM04": "insufficient funds",
        "ARDT": "already returned",
        "CUST": "customer decision",
        "LEGL": "legal decision",
        "NOAS": "no answer from customer",
    }
)
"""Reason codes of ISO's ExternalPaymentCancellationRejection1Code set that StopHub uses:
written and read as CxlStsRsnInf/Rsn/Cd."""

PROPRIETARY_REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "NMAT": "StopHub: no match of holder name, account number, amount and transaction time",
        "NOHD": "StopHub: no hold to act on",
        "AC01": "ISO status reason (not a cancellation rejection): incorrect account number",
        "BE01": "ISO status reason (not a cancellation rejection): inconsistent with end customer",
        "FRAD": "ISO reason (not a cancellation rejection): fraudulent origin",
    }
)
"""StopHub's own codes, and ISO codes from other code sets than the cancellation rejection
one: written and read as CxlStsRsnInf/Rsn/Prtry, never as Cd."""

NO_MATCH_REASON: Final = "NMAT"
"""The reason of a NO_MATCH answer; a rejection (RJCR) with NMAT and no StopHub supplement
reads as NO_MATCH."""


def reason_element(code: str) -> str:
    """ "Cd" or "Prtry": where a StopHub reason code goes in CxlStsRsnInf/Rsn."""
    if code in ISO_REASONS:
        return "Cd"
    if code in PROPRIETARY_REASONS:
        return "Prtry"
    raise UnsupportedCode("reason_code", code, [*ISO_REASONS, *PROPRIETARY_REASONS])
