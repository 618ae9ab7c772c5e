"""StopHub stop and fund-return orders as camt.056.001.12 (FIToFIPaymentCancellationRequest).

A stop asks the payee's institution to hold the money of fraudulent credits: one camt.056
with reason FRAD, one TxInf per fraudulent credit (amount, settlement date, exact time), each
naming the stopped account as the creditor. A fund return is the FRAD recall proper: one
TxInf naming the victim (debtor) the frozen money goes back to. The field-by-field mapping is
in docs/iso20022.md.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from lxml import etree

from adapters.iso20022 import _xml
from adapters.iso20022.codes import CANCELLATION_REASON, CURRENCY
from adapters.iso20022.errors import UnmappableContent, UnsupportedCode
from adapters.iso20022.generated import camt_056_001_12 as m
from stophub.v1 import account_pb2, order_pb2

MESSAGE: Final = _xml.CAMT056
_ROOT: Final = "FIToFIPmtCxlReq"
_SUPPLEMENT: Final = "StopHubOrdr"
_TX: Final = f"{_ROOT}/Undrlyg/TxInf"
_KINDS: Final = {"stop": order_pb2.ORDER_KIND_STOP, "fund_return": order_pb2.ORDER_KIND_RETURN}


# ---- StopHub -> camt.056 --------------------------------------------------------------------


def _agent(element: str, code: str) -> m.BranchAndFinancialInstitutionIdentification8:
    return m.BranchAndFinancialInstitutionIdentification8(
        fin_instn_id=m.FinancialInstitutionIdentification23(
            othr=m.GenericFinancialIdentification1(
                id=_xml.text(f"{element}/FinInstnId/Othr/Id", code, 35),
                issr=_xml.INSTITUTION_ISSUER,
            )
        )
    )


def _party_agent(element: str, code: str) -> m.Party50Choice:
    return m.Party50Choice(agt=_agent(f"{element}/Agt", code))


def _holder(element: str, name: str) -> m.Party50Choice | None:
    if not name:
        return None
    return m.Party50Choice(
        pty=m.PartyIdentification272(nm=_xml.text(f"{element}/Pty/Nm", name, 140))
    )


def _account(element: str, number: str) -> m.CashAccount40:
    return m.CashAccount40(
        id=m.AccountIdentification4Choice(
            othr=m.GenericAccountIdentification1(id=_xml.text(f"{element}/Id/Othr/Id", number, 34))
        )
    )


def _amount(element: str, fen: int) -> m.ActiveOrHistoricCurrencyAndAmount:
    return m.ActiveOrHistoricCurrencyAndAmount(value=_xml.amount(element, fen), ccy=CURRENCY)


def _reason(note: str) -> list[m.PaymentCancellationReason6]:
    return [
        m.PaymentCancellationReason6(
            rsn=m.CancellationReason33Choice(cd=CANCELLATION_REASON),
            addtl_inf=_xml.chunks(f"{_TX}/CxlRsnInf/AddtlInf", note, 105),
        )
    ]


def _stop_transactions(order: order_pb2.Order) -> list[m.PaymentTransaction172]:
    stop = order.instruction.stop
    account = stop.account
    ref = f"{_TX}/OrgnlTxRef"

    def reference(when: m.DateAndDateTime2Choice | None) -> m.OriginalTransactionReference47:
        return m.OriginalTransactionReference47(
            reqd_exctn_dt=when,
            cdtr=_holder(f"{ref}/Cdtr", account.holder_name),
            cdtr_acct=_account(f"{ref}/CdtrAcct", account.account_number),
            cdtr_agt=_agent(f"{ref}/CdtrAgt", account.institution_code),
        )

    if not stop.transactions:
        # A downstream stop may name no credit: the account alone, under the hold ceiling.
        return [
            m.PaymentTransaction172(
                cxl_rsn_inf=_reason(order.instruction.note), orgnl_tx_ref=reference(None)
            )
        ]
    txs: list[m.PaymentTransaction172] = []
    for n, fact in enumerate(stop.transactions, start=1):
        cxl_id = f"{order.order_id}/{n}"
        timed = fact.HasField("transaction_time")
        txs.append(
            m.PaymentTransaction172(
                cxl_id=cxl_id if len(cxl_id) <= 35 else None,
                orgnl_intr_bk_sttlm_amt=_amount(f"{_TX}/OrgnlIntrBkSttlmAmt", fact.amount_fen),
                orgnl_intr_bk_sttlm_dt=_xml.china_date(fact.transaction_time) if timed else None,
                cxl_rsn_inf=_reason(order.instruction.note if n == 1 else ""),
                orgnl_tx_ref=reference(
                    m.DateAndDateTime2Choice(
                        dt_tm=_xml.xml_datetime(f"{ref}/ReqdExctnDt/DtTm", fact.transaction_time)
                    )
                    if timed
                    else None
                ),
            )
        )
    return txs


def _return_transactions(order: order_pb2.Order) -> list[m.PaymentTransaction172]:
    back = order.instruction.fund_return
    victim = back.beneficiary
    ref = f"{_TX}/OrgnlTxRef"
    return [
        m.PaymentTransaction172(
            orgnl_intr_bk_sttlm_amt=_amount(f"{_TX}/OrgnlIntrBkSttlmAmt", back.amount_fen),
            cxl_rsn_inf=_reason(order.instruction.note),
            orgnl_tx_ref=m.OriginalTransactionReference47(
                dbtr=_holder(f"{ref}/Dbtr", victim.holder_name),
                dbtr_acct=_account(f"{ref}/DbtrAcct", victim.account_number),
                dbtr_agt=_agent(f"{ref}/DbtrAgt", victim.institution_code),
            ),
        )
    ]


def _supplement(order: order_pb2.Order) -> m.SupplementaryData1:
    i = order.instruction
    if i.WhichOneof("instruction") == "stop":
        _xml.amount("instruction.stop.amount_fen", i.stop.amount_fen)
        fields: list[tuple[str, str | None]] = [
            ("Kind", "STOP"),
            ("HoldAmt", str(i.stop.amount_fen)),
            (
                "UpstrmOrdrId",
                _xml.optional_text(
                    "instruction.stop.upstream_order_id", i.stop.upstream_order_id, 35
                ),
            ),
        ]
    else:
        r = i.fund_return
        fields = [
            ("Kind", "RETURN"),
            (
                "FrzOrdrId",
                _xml.optional_text(
                    "instruction.fund_return.freeze_order_id", r.freeze_order_id, 35
                ),
            ),
            (
                "DstrbtnId",
                _xml.optional_text(
                    "instruction.fund_return.distribution_id", r.distribution_id, 35
                ),
            ),
            (
                "BnfcryCaseId",
                _xml.optional_text(
                    "instruction.fund_return.beneficiary_case_id", r.beneficiary_case_id, 35
                ),
            ),
        ]
    return m.SupplementaryData1(
        plc_and_nm=f"/Document/{_ROOT}",
        envlp=m.SupplementaryDataEnvelope1(any_element=_xml.supl_element(_SUPPLEMENT, fields)),
    )


def order_to_camt056(order: order_pb2.Order) -> bytes:
    """A stop or fund-return order as a camt.056.001.12 document (UTF-8 bytes), XSD-checked.

    Uses order_id, case_id, issued_by, addressed_to, issue_time and the instruction (stop or
    fund_return, and its note). Raises UnmappableContent for another kind of order or a value
    the message cannot carry.
    """
    which = order.instruction.WhichOneof("instruction")
    if which not in _KINDS:
        raise UnmappableContent(
            "instruction",
            f"a {which or 'missing'} instruction has no camt.056 form; only stop and "
            "fund_return (a FRAD recall) have",
        )
    if order.kind not in (order_pb2.ORDER_KIND_UNSPECIFIED, _KINDS[which]):
        raise UnmappableContent(
            "kind", f"{order_pb2.OrderKind.Name(order.kind)} contradicts the {which} instruction"
        )
    if order.instruction.case_id and order.instruction.case_id != order.case_id:
        raise UnmappableContent(
            "instruction.case_id",
            f"{order.instruction.case_id!r} differs from the order's case {order.case_id!r}",
        )
    if not order.HasField("issue_time"):
        raise UnmappableContent("issue_time", f"unset; {_ROOT}/Assgnmt/CreDtTm is mandatory")
    txs = _stop_transactions(order) if which == "stop" else _return_transactions(order)
    amounts = [t.orgnl_intr_bk_sttlm_amt.value for t in txs if t.orgnl_intr_bk_sttlm_amt]
    document = m.Document(
        fito_fipmt_cxl_req=m.FitoFipaymentCancellationRequestV12(
            assgnmt=m.CaseAssignment6(
                id=_xml.text(f"{_ROOT}/Assgnmt/Id (order_id)", order.order_id, 35),
                assgnr=_party_agent(f"{_ROOT}/Assgnmt/Assgnr (issued_by)", order.issued_by),
                assgne=_party_agent(f"{_ROOT}/Assgnmt/Assgne (addressed_to)", order.addressed_to),
                cre_dt_tm=_xml.xml_datetime(f"{_ROOT}/Assgnmt/CreDtTm", order.issue_time),
            ),
            case=m.Case6(
                id=_xml.text(f"{_ROOT}/Case/Id (case_id)", order.case_id, 35),
                cretr=_party_agent(f"{_ROOT}/Case/Cretr", order.issued_by),
            ),
            ctrl_data=m.ControlData1(nb_of_txs=str(len(amounts)), ctrl_sum=sum(amounts, Decimal(0)))
            if amounts
            else None,
            undrlyg=[m.UnderlyingTransaction36(tx_inf=txs)],
            splmtry_data=[_supplement(order)],
        )
    )
    return _xml.render(document, MESSAGE)


# ---- camt.056 -> StopHub --------------------------------------------------------------------


def _holder_name(element: str, party: m.Party50Choice | None) -> str:
    if party is None:
        return ""
    if party.pty is None:
        raise UnmappableContent(f"{element}/Agt", "the account holder is a party: use Pty/Nm")
    return party.pty.nm or ""


def _account_number(element: str, account: m.CashAccount40 | None) -> str:
    if account is None or account.id is None:
        raise UnmappableContent(f"{element}/Id", "is missing; StopHub needs the account number")
    if account.id.othr is not None:
        return account.id.othr.id
    return account.id.iban or ""


def _fen(element: str, value: m.ActiveOrHistoricCurrencyAndAmount) -> int:
    return _xml.fen(element, value.value, value.ccy)


def _note(element: str, tx: m.PaymentTransaction172) -> str:
    if not tx.cxl_rsn_inf:
        raise UnmappableContent(
            f"{element}/CxlRsnInf", f"is missing; expected Rsn/Cd {CANCELLATION_REASON}"
        )
    parts: list[str] = []
    for reason in tx.cxl_rsn_inf:
        code = reason.rsn.cd if reason.rsn is not None else None
        if reason.rsn is None or code is None:
            shown = reason.rsn.prtry if reason.rsn is not None else None
            raise UnsupportedCode(
                f"{element}/CxlRsnInf/Rsn/Prtry", str(shown), [CANCELLATION_REASON]
            )
        if code != CANCELLATION_REASON:
            raise UnsupportedCode(f"{element}/CxlRsnInf/Rsn/Cd", code, [CANCELLATION_REASON])
        parts.extend(reason.addtl_inf)
    return "".join(parts)


def _supplement_of(root: etree._Element) -> dict[str, str | None]:
    found = _xml.supplement(root, _ROOT, _SUPPLEMENT)
    names = ("Kind", "HoldAmt", "UpstrmOrdrId", "FrzOrdrId", "DstrbtnId", "BnfcryCaseId")
    if found is None:
        return dict.fromkeys(names)
    return {name: _xml.supl_text(found, name) for name in names}


def camt056_to_order(xml: bytes) -> order_pb2.Order:
    """The stop or fund-return order a camt.056.001.12 document carries.

    The document must pass the official XSD, give the cancellation reason FRAD on every
    transaction and name institutions by StopHub code. Without a StopHub supplement it reads
    as a stop whose ceiling is the total of its transactions. The Order has order_id,
    case_id, kind, issued_by, addressed_to, issue_time and instruction set; nothing else.
    """
    root = _xml.parse(xml)
    _xml.check(root, MESSAGE)
    supl = _supplement_of(root)
    req = _xml.bind(bytes(xml), m.Document).fito_fipmt_cxl_req
    if req.case is None:
        raise UnmappableContent(f"{_ROOT}/Case/Id", "is missing; StopHub needs the case id")
    txs = [tx for u in req.undrlyg for tx in u.tx_inf]
    if not txs:
        raise UnmappableContent(_TX, "is missing; StopHub needs the account (and credits)")
    order = order_pb2.Order(
        order_id=req.assgnmt.id,
        case_id=req.case.id,
        issued_by=_xml.party_code(f"{_ROOT}/Assgnmt/Assgnr", req.assgnmt.assgnr),
        addressed_to=_xml.party_code(f"{_ROOT}/Assgnmt/Assgne", req.assgnmt.assgne),
    )
    order.issue_time.CopyFrom(_xml.timestamp(f"{_ROOT}/Assgnmt/CreDtTm", req.assgnmt.cre_dt_tm))
    order.instruction.case_id = req.case.id
    order.instruction.note = _note(f"{_TX}[1]", txs[0])
    for n, tx in enumerate(txs[1:], start=2):
        _note(f"{_TX}[{n}]", tx)
    amounts = [
        _fen(f"{_TX}/OrgnlIntrBkSttlmAmt", t.orgnl_intr_bk_sttlm_amt)
        for t in txs
        if t.orgnl_intr_bk_sttlm_amt
    ]
    ctrl = req.ctrl_data
    total = _xml.amount(f"{_ROOT}/CtrlData/CtrlSum", sum(amounts))
    if ctrl is not None and (
        ctrl.nb_of_txs != str(len(amounts))
        or (ctrl.ctrl_sum is not None and ctrl.ctrl_sum != total)
    ):
        raise UnmappableContent(
            f"{_ROOT}/CtrlData",
            f"says {ctrl.nb_of_txs} transactions summing {ctrl.ctrl_sum}; "
            f"the document has {len(amounts)} summing {total}",
        )
    kind = supl["Kind"] or "STOP"
    if kind == "RETURN":
        order.kind = order_pb2.ORDER_KIND_RETURN
        _read_return(order, txs, supl)
    else:
        order.kind = order_pb2.ORDER_KIND_STOP
        _read_stop(order, txs, amounts, supl)
    return order


def _same_account(
    txs: list[m.PaymentTransaction172], side: str
) -> m.OriginalTransactionReference47:
    refs = []
    for n, tx in enumerate(txs, start=1):
        if tx.orgnl_tx_ref is None:
            raise UnmappableContent(
                f"{_TX}[{n}]/OrgnlTxRef", f"is missing; StopHub needs the {side}"
            )
        refs.append(tx.orgnl_tx_ref)
    first = refs[0]

    def key(r: m.OriginalTransactionReference47) -> tuple[object, ...]:
        if side == "creditor":
            return (r.cdtr, r.cdtr_acct, r.cdtr_agt)
        return (r.dbtr, r.dbtr_acct, r.dbtr_agt)

    for n, r in enumerate(refs[1:], start=2):
        if key(r) != key(first):
            raise UnmappableContent(
                f"{_TX}[{n}]/OrgnlTxRef",
                f"names another {side} account than TxInf[1]; one order is about one account",
            )
    return first


def _read_stop(
    order: order_pb2.Order,
    txs: list[m.PaymentTransaction172],
    amounts: list[int],
    supl: dict[str, str | None],
) -> None:
    stop = order.instruction.stop
    ref = _same_account(txs, "creditor")
    path = f"{_TX}/OrgnlTxRef"
    stop.account.CopyFrom(
        account_pb2.AccountRef(
            institution_code=_xml.institution_code(f"{path}/CdtrAgt", ref.cdtr_agt),
            account_number=_account_number(f"{path}/CdtrAcct", ref.cdtr_acct),
            holder_name=_holder_name(f"{path}/Cdtr", ref.cdtr),
        )
    )
    if (amounts and len(amounts) != len(txs)) or (not amounts and len(txs) != 1):
        raise UnmappableContent(
            f"{_TX}/OrgnlIntrBkSttlmAmt",
            "is on some transactions only; each fraudulent credit has its amount",
        )
    for n, (tx, fen) in enumerate(zip(txs, amounts, strict=False), start=1):
        fact = stop.transactions.add(amount_fen=fen)
        when = tx.orgnl_tx_ref.reqd_exctn_dt if tx.orgnl_tx_ref else None
        if when is not None:
            if when.dt_tm is None:
                raise UnmappableContent(
                    f"{_TX}[{n}]/OrgnlTxRef/ReqdExctnDt/Dt",
                    "a date alone; StopHub matches the credit's time: use DtTm",
                )
            fact.transaction_time.CopyFrom(
                _xml.timestamp(f"{_TX}[{n}]/OrgnlTxRef/ReqdExctnDt/DtTm", when.dt_tm)
            )
    if supl["Kind"] is not None and supl["HoldAmt"] is not None:
        stop.amount_fen = int(supl["HoldAmt"])
    else:
        stop.amount_fen = sum(amounts)
    stop.upstream_order_id = supl["UpstrmOrdrId"] or ""
    for name in ("FrzOrdrId", "DstrbtnId", "BnfcryCaseId"):
        if supl[name] is not None:
            raise UnmappableContent(
                f"SplmtryData/Envlp/{_SUPPLEMENT}/{name}", "belongs to a RETURN, not a STOP"
            )


def _read_return(
    order: order_pb2.Order, txs: list[m.PaymentTransaction172], supl: dict[str, str | None]
) -> None:
    back = order.instruction.fund_return
    if len(txs) != 1:
        raise UnmappableContent(_TX, f"{len(txs)} transactions; a fund return has exactly one")
    tx = txs[0]
    if tx.orgnl_intr_bk_sttlm_amt is None:
        raise UnmappableContent(f"{_TX}/OrgnlIntrBkSttlmAmt", "is missing; the amount to return")
    ref = _same_account(txs, "debtor")
    path = f"{_TX}/OrgnlTxRef"
    back.beneficiary.CopyFrom(
        account_pb2.AccountRef(
            institution_code=_xml.institution_code(f"{path}/DbtrAgt", ref.dbtr_agt),
            account_number=_account_number(f"{path}/DbtrAcct", ref.dbtr_acct),
            holder_name=_holder_name(f"{path}/Dbtr", ref.dbtr),
        )
    )
    back.amount_fen = _fen(f"{_TX}/OrgnlIntrBkSttlmAmt", tx.orgnl_intr_bk_sttlm_amt)
    back.freeze_order_id = supl["FrzOrdrId"] or ""
    back.distribution_id = supl["DstrbtnId"] or ""
    back.beneficiary_case_id = supl["BnfcryCaseId"] or ""
    for name in ("HoldAmt", "UpstrmOrdrId"):
        if supl[name] is not None:
            raise UnmappableContent(
                f"SplmtryData/Envlp/{_SUPPLEMENT}/{name}", "belongs to a STOP, not a RETURN"
            )
