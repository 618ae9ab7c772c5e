"""A bank's answer to a stop or fund-return order as camt.029.001.14 (ResolutionOfInvestigation).

The status is ISO's (Sts/Conf CNCL, PECR or RJCR, with the transaction and group
cancellation statuses), the reason code goes in CxlStsRsnInf/Rsn (Cd for ISO cancellation
rejection codes, Prtry for StopHub's own), and the numbers ISO has no element for (amount
held, balance left, onward transfers) travel in a StopHub supplement. The field-by-field
mapping is in docs/iso20022.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from lxml import etree

from adapters.iso20022 import _xml
from adapters.iso20022.codes import (
    CONFIRMATION,
    GROUP_STATUS,
    ISO_REASONS,
    NO_MATCH_REASON,
    PROPRIETARY_REASONS,
    TX_STATUS,
    reason_element,
)
from adapters.iso20022.errors import UnmappableContent, UnsupportedCode
from adapters.iso20022.generated import camt_029_001_14 as m
from stophub.v1 import order_pb2

MESSAGE: Final = _xml.CAMT029
_ROOT: Final = "RsltnOfInvstgtn"
_SUPPLEMENT: Final = "StopHubRslt"
_GROUP: Final = f"{_ROOT}/CxlDtls/OrgnlGrpInfAndSts"
_TX: Final = f"{_ROOT}/CxlDtls/TxInfAndSts"
_ANSWERED_MESSAGE: Final = _xml.CAMT056
"""OrgnlGrpInfAndSts/OrgnlMsgNmId: the order travelled as a camt.056 whose Assgnmt/Id is the
order id."""


@dataclass(frozen=True)
class Resolution:
    """A camt.029 in StopHub terms: the execution result and who sent it to whom, when."""

    message_id: str
    """Assgnmt/Id: the answer's own id (the signed envelope's message id)."""
    case_id: str
    """RslvdCase/Id."""
    answered_by: str
    """Assgnmt/Assgnr: the institution that carried out the order (StopHub code)."""
    answered_to: str
    """Assgnmt/Assgne and RslvdCase/Cretr: the centre that issued the order (StopHub code)."""
    create_time: datetime
    """Assgnmt/CreDtTm, aware, in UTC, to the microsecond."""
    result: order_pb2.ExecutionResult


# ---- StopHub -> camt.029 --------------------------------------------------------------------


def _party(element: str, code: str) -> m.Party50Choice:
    return m.Party50Choice(
        agt=m.BranchAndFinancialInstitutionIdentification8(
            fin_instn_id=m.FinancialInstitutionIdentification23(
                othr=m.GenericFinancialIdentification1(
                    id=_xml.text(f"{element}/Agt/FinInstnId/Othr/Id", code, 35),
                    issr=_xml.INSTITUTION_ISSUER,
                )
            )
        )
    )


def _reasons(result: order_pb2.ExecutionResult) -> list[m.CancellationStatusReason5]:
    if not result.reason_code and not result.reason:
        return []
    rsn = None
    if result.reason_code:
        where = reason_element(result.reason_code)
        rsn = (
            m.CancellationStatusReason3Choice(cd=result.reason_code)
            if where == "Cd"
            else m.CancellationStatusReason3Choice(prtry=result.reason_code)
        )
    return [
        m.CancellationStatusReason5(
            rsn=rsn, addtl_inf=_xml.chunks(f"{_TX}/CxlStsRsnInf/AddtlInf", result.reason, 105)
        )
    ]


def _fen_text(element: str, fen: int) -> str | None:
    _xml.amount(element, fen)
    return str(fen) if fen else None


def _supplement(result: order_pb2.ExecutionResult) -> m.SupplementaryData1:
    fields: list[tuple[str, str | None]] = [
        ("Sts", order_pb2.ExecutionStatus.Name(result.status).removeprefix("EXECUTION_STATUS_")),
        (
            "ExctnDtTm",
            str(_xml.xml_datetime("execute_time", result.execute_time))
            if result.HasField("execute_time")
            else None,
        ),
        ("HeldAmt", _fen_text("amount_held_fen", result.amount_held_fen)),
        ("AvlblBal", _fen_text("available_balance_fen", result.available_balance_fen)),
        ("RlsdAmt", _fen_text("amount_released_fen", result.amount_released_fen)),
        ("RtrdAmt", _fen_text("amount_returned_fen", result.amount_returned_fen)),
    ]
    envelope = _xml.supl_element(_SUPPLEMENT, fields)
    for n, t in enumerate(result.onward_transfers, start=1):
        at = f"onward_transfers[{n}]"
        envelope.children.append(
            _xml.supl_element(
                "OnwrdTrf",
                [
                    (
                        "TrfDtTm",
                        str(_xml.xml_datetime(f"{at}.transfer_time", t.transfer_time))
                        if t.HasField("transfer_time")
                        else None,
                    ),
                    (
                        "Amt",
                        str(t.amount_fen) if _xml.amount(f"{at}.amount_fen", t.amount_fen) else "0",
                    ),
                    ("CarrdAmt", _fen_text(f"{at}.carried_fen", t.carried_fen)),
                    (
                        "ToInstnId",
                        _xml.optional_text(
                            f"{at}.to_account.institution_code", t.to_account.institution_code, 35
                        ),
                    ),
                    (
                        "ToAcctId",
                        _xml.optional_text(
                            f"{at}.to_account.account_number", t.to_account.account_number, 35
                        ),
                    ),
                    (
                        "ToHldrNm",
                        _xml.optional_text(
                            f"{at}.to_account.holder_name", t.to_account.holder_name, 140
                        ),
                    ),
                    (
                        "TxRef",
                        _xml.optional_text(
                            f"{at}.transaction_reference", t.transaction_reference, 35
                        ),
                    ),
                ],
            )
        )
    return m.SupplementaryData1(
        plc_and_nm=f"/Document/{_ROOT}", envlp=m.SupplementaryDataEnvelope1(any_element=envelope)
    )


def execution_to_camt029(
    result: order_pb2.ExecutionResult,
    *,
    message_id: str,
    case_id: str,
    answered_by: str,
    answered_to: str,
    create_time: datetime,
) -> bytes:
    """An execution result as a camt.029.001.14 document (UTF-8 bytes), XSD-checked.

    Raises UnsupportedCode for an unset status or a reason code StopHub does not know, and
    UnmappableContent for a value the message cannot carry.
    """
    if result.status not in CONFIRMATION:
        raise UnsupportedCode(
            "status",
            order_pb2.ExecutionStatus.Name(result.status),
            [order_pb2.ExecutionStatus.Name(s) for s in CONFIRMATION],
        )
    status = result.status
    document = m.Document(
        rsltn_of_invstgtn=m.ResolutionOfInvestigationV14(
            assgnmt=m.CaseAssignment6(
                id=_xml.text(f"{_ROOT}/Assgnmt/Id (message_id)", message_id, 35),
                assgnr=_party(f"{_ROOT}/Assgnmt/Assgnr (answered_by)", answered_by),
                assgne=_party(f"{_ROOT}/Assgnmt/Assgne (answered_to)", answered_to),
                cre_dt_tm=_xml.xml_datetime_of(f"{_ROOT}/Assgnmt/CreDtTm", create_time),
            ),
            rslvd_case=m.Case6(
                id=_xml.text(f"{_ROOT}/RslvdCase/Id (case_id)", case_id, 35),
                cretr=_party(f"{_ROOT}/RslvdCase/Cretr", answered_to),
            ),
            sts=m.InvestigationStatus6Choice(conf=CONFIRMATION[status]),
            cxl_dtls=[
                m.UnderlyingTransaction35(
                    orgnl_grp_inf_and_sts=m.OriginalGroupHeader23(
                        orgnl_msg_id=_xml.text(
                            f"{_GROUP}/OrgnlMsgId (order_id)", result.order_id, 35
                        ),
                        orgnl_msg_nm_id=_ANSWERED_MESSAGE,
                        grp_cxl_sts=m.GroupCancellationStatus1Code(GROUP_STATUS[status]),
                    ),
                    tx_inf_and_sts=[
                        m.PaymentTransaction170(
                            tx_cxl_sts=m.CancellationIndividualStatus1Code(TX_STATUS[status]),
                            cxl_sts_rsn_inf=_reasons(result),
                        )
                    ],
                )
            ],
            splmtry_data=[_supplement(result)],
        )
    )
    return _xml.render(document, MESSAGE)


# ---- camt.029 -> StopHub --------------------------------------------------------------------


def _reason_of(
    reasons: list[tuple[str, m.CancellationStatusReason5]],
) -> tuple[str, str]:
    codes: list[str] = []
    texts: list[str] = []
    for where, reason in reasons:
        texts.extend(reason.addtl_inf)
        if reason.rsn is None:
            continue
        if reason.rsn.cd is not None:
            if reason.rsn.cd not in ISO_REASONS:
                hint = (
                    f" ({reason.rsn.cd} is StopHub's own: use Prtry)"
                    if reason.rsn.cd in PROPRIETARY_REASONS
                    else ""
                )
                raise UnsupportedCode(
                    f"{where}/CxlStsRsnInf/Rsn/Cd{hint}", reason.rsn.cd, ISO_REASONS
                )
            codes.append(reason.rsn.cd)
        elif reason.rsn.prtry is not None:
            if reason.rsn.prtry not in PROPRIETARY_REASONS:
                raise UnsupportedCode(
                    f"{where}/CxlStsRsnInf/Rsn/Prtry", reason.rsn.prtry, PROPRIETARY_REASONS
                )
            codes.append(reason.rsn.prtry)
    if len(set(codes)) > 1:
        raise UnmappableContent(
            f"{_ROOT}/CxlDtls//CxlStsRsnInf/Rsn",
            f"gives {len(set(codes))} different codes ({', '.join(sorted(set(codes)))}); "
            "a StopHub answer has one reason code",
        )
    return (codes[0] if codes else "", "".join(texts))


def _check_status(element: str, found: str | None, allowed: tuple[str, ...], conf: str) -> None:
    if found is not None and found not in allowed:
        raise UnmappableContent(
            element,
            f"is {found}, which contradicts Sts/Conf {conf} (expected {' or '.join(allowed)})",
        )


def _supplement_of(root: etree._Element) -> etree._Element | None:
    return _xml.supplement(root, _ROOT, _SUPPLEMENT)


def _supl_fen(supl: etree._Element, child: str) -> int:
    value = _xml.supl_text(supl, child)
    return int(value) if value is not None else 0


def camt029_to_execution(xml: bytes) -> Resolution:
    """The execution result a camt.029.001.14 document carries.

    The document must pass the official XSD and answer with Sts/Conf CNCL, PECR or RJCR and
    at most one reason code that StopHub maps. Without a StopHub supplement the status comes
    from Conf and the reason (RJCR with Prtry NMAT reads as NO_MATCH) and the amounts are 0.
    """
    root = _xml.parse(xml)
    _xml.check(root, MESSAGE)
    supl = _supplement_of(root)
    doc = _xml.bind(bytes(xml), m.Document).rsltn_of_invstgtn
    conf = doc.sts.conf
    if conf is None:
        given = next(
            name
            for name, value in (
                ("RjctdMod", doc.sts.rjctd_mod),
                ("DplctOf", doc.sts.dplct_of),
                ("AssgnmtCxlConf", doc.sts.assgnmt_cxl_conf),
            )
            if value not in (None, [])
        )
        raise UnsupportedCode(f"{_ROOT}/Sts", given, ["Conf"])
    allowed_conf = sorted(set(CONFIRMATION.values()))
    if conf not in allowed_conf:
        raise UnsupportedCode(f"{_ROOT}/Sts/Conf", conf, allowed_conf)
    if doc.rslvd_case is None:
        raise UnmappableContent(f"{_ROOT}/RslvdCase/Id", "is missing; StopHub needs the case id")
    groups = [d.orgnl_grp_inf_and_sts for d in doc.cxl_dtls if d.orgnl_grp_inf_and_sts]
    if len(groups) != 1:
        raise UnmappableContent(
            f"{_GROUP}/OrgnlMsgId",
            f"found {len(groups)}; StopHub needs exactly one, the order id",
        )
    group = groups[0]
    if group.orgnl_msg_nm_id != _ANSWERED_MESSAGE:
        raise UnmappableContent(
            f"{_GROUP}/OrgnlMsgNmId",
            f"is {group.orgnl_msg_nm_id!r}; StopHub orders travel as {_ANSWERED_MESSAGE}",
        )
    txs = [t for d in doc.cxl_dtls for t in d.tx_inf_and_sts]
    if len(txs) > 1:
        raise UnmappableContent(_TX, f"{len(txs)} transactions; one answer is about one order")
    if any(d.orgnl_pmt_inf_and_sts for d in doc.cxl_dtls):
        raise UnmappableContent(
            f"{_ROOT}/CxlDtls/OrgnlPmtInfAndSts", "is about a payment initiation; not mapped"
        )
    group_allowed = {"CNCL": ("ACCR",), "PECR": ("PACR", "ACCR"), "RJCR": ("RJCR",)}[conf]
    _check_status(
        f"{_GROUP}/GrpCxlSts",
        group.grp_cxl_sts.value if group.grp_cxl_sts else None,
        group_allowed,
        conf,
    )
    reasons = [(_GROUP, r) for r in group.cxl_sts_rsn_inf]
    if txs:
        tx = txs[0]
        tx_allowed = ("RJCR",) if conf == "RJCR" else ("ACCR",)
        _check_status(
            f"{_TX}/TxCxlSts", tx.tx_cxl_sts.value if tx.tx_cxl_sts else None, tx_allowed, conf
        )
        reasons.extend((_TX, r) for r in tx.cxl_sts_rsn_inf)
    code, text = _reason_of(reasons)

    result = order_pb2.ExecutionResult(order_id=group.orgnl_msg_id, reason_code=code, reason=text)
    if supl is not None:
        name = _xml.supl_text(supl, "Sts") or ""
        status = order_pb2.ExecutionStatus.Value(f"EXECUTION_STATUS_{name}")
        if CONFIRMATION[status] != conf:
            raise UnmappableContent(
                f"SplmtryData/Envlp/{_SUPPLEMENT}/Sts",
                f"is {name}, which contradicts Sts/Conf {conf} (expected {CONFIRMATION[status]})",
            )
        result.status = status
        when = _xml.supl_text(supl, "ExctnDtTm")
        if when is not None:
            result.execute_time.CopyFrom(_xml.timestamp_text(f"{_SUPPLEMENT}/ExctnDtTm", when))
        result.amount_held_fen = _supl_fen(supl, "HeldAmt")
        result.available_balance_fen = _supl_fen(supl, "AvlblBal")
        result.amount_released_fen = _supl_fen(supl, "RlsdAmt")
        result.amount_returned_fen = _supl_fen(supl, "RtrdAmt")
        for n, trf in enumerate(supl.iterfind(f"{{{_xml.SUPL_NS}}}OnwrdTrf"), start=1):
            t = result.onward_transfers.add(
                amount_fen=_supl_fen(trf, "Amt"),
                carried_fen=_supl_fen(trf, "CarrdAmt"),
                transaction_reference=_xml.supl_text(trf, "TxRef") or "",
            )
            t.to_account.institution_code = _xml.supl_text(trf, "ToInstnId") or ""
            t.to_account.account_number = _xml.supl_text(trf, "ToAcctId") or ""
            t.to_account.holder_name = _xml.supl_text(trf, "ToHldrNm") or ""
            at = _xml.supl_text(trf, "TrfDtTm")
            if at is not None:
                t.transfer_time.CopyFrom(
                    _xml.timestamp_text(f"{_SUPPLEMENT}/OnwrdTrf[{n}]/TrfDtTm", at)
                )
    elif conf == "CNCL":
        result.status = order_pb2.EXECUTION_STATUS_EXECUTED
    elif conf == "PECR":
        result.status = order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED
    elif code == NO_MATCH_REASON:
        result.status = order_pb2.EXECUTION_STATUS_NO_MATCH
    else:
        result.status = order_pb2.EXECUTION_STATUS_REJECTED
    return Resolution(
        message_id=doc.assgnmt.id,
        case_id=doc.rslvd_case.id,
        answered_by=_xml.party_code(f"{_ROOT}/Assgnmt/Assgnr", doc.assgnmt.assgnr),
        answered_to=_xml.party_code(f"{_ROOT}/Assgnmt/Assgne", doc.assgnmt.assgne),
        create_time=_xml.datetime_of(f"{_ROOT}/Assgnmt/CreDtTm", doc.assgnmt.cre_dt_tm),
        result=result,
    )
