"""The ISO 20022 bridge: camt.056 and camt.029 against the official XSDs, both directions."""

from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters.bank.agent import _hold_result
from adapters.corebank.simulated import SimulatedCoreBank
from adapters.iso20022 import (
    Iso20022Error,
    MalformedXml,
    Resolution,
    SchemaViolation,
    UnmappableContent,
    UnsupportedCode,
    WrongMessageType,
    _xml,
    camt029_to_execution,
    camt056_to_order,
    camt056_to_stop,
    execution_to_camt029,
    order_to_camt056,
    stop_to_camt056,
)
from adapters.iso20022.codes import ISO_REASONS, PROPRIETARY_REASONS
from hub.domain.cases import REASON_CODES
from stophub.v1 import account_pb2, order_pb2

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "adapters" / "iso20022"
NS056 = "urn:iso:std:iso:20022:tech:xsd:camt.056.001.12"
NS029 = "urn:iso:std:iso:20022:tech:xsd:camt.029.001.14"
SUPL = "urn:stophub:xsd:supl.001.01"
T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# The official schemas as shipped in camt-exceptions 0.0.20 (see adapters/iso20022/xsd/README.md).
XSD_SHA256 = {
    "camt.056.001.12.xsd": "5a73711b0610d5bb39815b2965207a8fac11e6de4381cb48bf250cc34f8887c5",
    "camt.029.001.14.xsd": "eb460e99437aaac2c083a549aadaad6c3317835244ca4c833912a62cb1ce14aa",
}

STATUSES = [
    order_pb2.EXECUTION_STATUS_EXECUTED,
    order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED,
    order_pb2.EXECUTION_STATUS_NO_MATCH,
    order_pb2.EXECUTION_STATUS_REJECTED,
]
ALL_REASONS = sorted([*ISO_REASONS, *PROPRIETARY_REASONS])


# ---- builders -------------------------------------------------------------------------------


def ts(seconds: int, nanos: int = 0) -> order_pb2.TransactionFact:
    fact = order_pb2.TransactionFact()
    fact.transaction_time.seconds = seconds
    fact.transaction_time.nanos = nanos
    return fact


def stop_order(**over: object) -> order_pb2.Order:
    order = order_pb2.Order(
        order_id="C20260302-0A1B2C3D-O001",
        case_id="C20260302-0A1B2C3D",
        kind=order_pb2.ORDER_KIND_STOP,
        issued_by="AFC",
        addressed_to="BANKB",
    )
    order.issue_time.FromDatetime(T)
    i = order.instruction
    i.case_id = order.case_id
    i.note = "victim paid twice; hold now"
    i.stop.account.CopyFrom(
        account_pb2.AccountRef(
            institution_code="BANKB", account_number="6222020200112233", holder_name="王五"
        )
    )
    i.stop.amount_fen = 150_000
    for seconds, fen in ((1_772_400_000, 100_000), (1_772_400_600, 50_000)):
        fact = i.stop.transactions.add(amount_fen=fen)
        fact.transaction_time.seconds = seconds
    for key, value in over.items():
        setattr(order, key, value)
    i.case_id = order.case_id
    return order


def return_order() -> order_pb2.Order:
    order = order_pb2.Order(
        order_id="C20260302-0A1B2C3D-O007",
        case_id="C20260302-0A1B2C3D",
        kind=order_pb2.ORDER_KIND_RETURN,
        issued_by="AFC",
        addressed_to="BANKB",
    )
    order.issue_time.FromDatetime(T)
    i = order.instruction
    i.case_id = order.case_id
    r = i.fund_return
    r.freeze_order_id = "C20260302-0A1B2C3D-O003"
    r.beneficiary.CopyFrom(
        account_pb2.AccountRef(
            institution_code="BANKA", account_number="6217000011112222", holder_name="赵六"
        )
    )
    r.amount_fen = 99_999
    r.distribution_id = "D-0001"
    r.beneficiary_case_id = "C20260302-99999999"
    return order


def answer(
    status: order_pb2.ExecutionStatus.ValueType = order_pb2.EXECUTION_STATUS_EXECUTED,
    code: str = "",
    **fields: object,
) -> order_pb2.ExecutionResult:
    result = order_pb2.ExecutionResult(
        order_id="C20260302-0A1B2C3D-O001", status=status, reason_code=code
    )
    for key, value in fields.items():
        setattr(result, key, value)
    return result


def camt029(result: order_pb2.ExecutionResult, **over: object) -> bytes:
    args: dict[str, object] = {
        "message_id": "BANKB-ANS-0001",
        "case_id": "C20260302-0A1B2C3D",
        "answered_by": "BANKB",
        "answered_to": "AFC",
        "create_time": T,
    }
    args.update(over)
    return execution_to_camt029(result, **args)  # type: ignore[arg-type]


def valid(xml: bytes, xsd: str) -> bool:
    """Validate with a schema compiled here from the vendored file, not the bridge's own."""
    schema = etree.XMLSchema(etree.parse(str(PKG / "xsd" / xsd)))
    return schema.validate(etree.fromstring(xml))


def edit(xml: bytes, change: str, ns: str = NS056) -> bytes:
    """Apply `change` ("remove XPATH" or "set XPATH=TEXT") with prefix i: for the ISO
    namespace and sh: for the StopHub supplement."""
    root = etree.fromstring(xml)
    verb, rest = change.split(" ", 1)
    path, _, value = rest.partition("=")
    found = root.xpath(path, namespaces={"i": ns, "sh": SUPL})
    assert found, f"{path} matched nothing"
    for element in found:
        if verb == "remove":
            element.getparent().remove(element)
        else:
            element.text = value
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# ---- provenance and code tables -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(XSD_SHA256))
def test_vendored_schemas_are_the_recorded_official_files(name: str) -> None:
    data = (PKG / "xsd" / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == XSD_SHA256[name]
    assert b"Generated by Standards Editor" in data[:300]
    assert XSD_SHA256[name] in (PKG / "xsd" / "README.md").read_text()


def test_generated_bindings_match_the_schemas() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "iso20022gen.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_stophub_reason_code_has_exactly_one_iso_place() -> None:
    assert set(ISO_REASONS) | set(PROPRIETARY_REASONS) == set(REASON_CODES)
    assert not set(ISO_REASONS) & set(PROPRIETARY_REASONS)


# ---- camt.056 -------------------------------------------------------------------------------


def test_stop_as_camt056_carries_the_four_facts_where_iso_puts_them() -> None:
    xml = stop_to_camt056(stop_order())
    assert valid(xml, "camt.056.001.12.xsd")
    root = etree.fromstring(xml)
    ns = {"i": NS056, "sh": SUPL}

    def one(path: str) -> str:
        values = root.xpath(path, namespaces=ns)
        assert len(values) == 1, path
        return str(values[0])

    assert one("/i:Document/i:FIToFIPmtCxlReq/i:Assgnmt/i:Id/text()") == "C20260302-0A1B2C3D-O001"
    assert one("//i:Assgnmt/i:Assgnr/i:Agt/i:FinInstnId/i:Othr/i:Id/text()") == "AFC"
    assert one("//i:Assgnmt/i:Assgne/i:Agt/i:FinInstnId/i:Othr/i:Id/text()") == "BANKB"
    assert one("//i:Assgnmt/i:CreDtTm/text()") == "2026-03-02T09:00:00Z"
    assert one("//i:FIToFIPmtCxlReq/i:Case/i:Id/text()") == "C20260302-0A1B2C3D"
    assert one("//i:CtrlData/i:NbOfTxs/text()") == "2"
    assert one("//i:CtrlData/i:CtrlSum/text()") == "1500.00"
    amounts = root.xpath("//i:TxInf/i:OrgnlIntrBkSttlmAmt", namespaces=ns)
    assert [(a.text, a.get("Ccy")) for a in amounts] == [("1000.00", "CNY"), ("500.00", "CNY")]
    assert root.xpath("//i:TxInf/i:CxlRsnInf/i:Rsn/i:Cd/text()", namespaces=ns) == ["FRAD"] * 2
    # 2026-03-01T21:20:00Z is already 2 March in China.
    assert root.xpath("//i:TxInf/i:OrgnlIntrBkSttlmDt/text()", namespaces=ns) == [
        "2026-03-02",
        "2026-03-02",
    ]
    assert root.xpath("//i:OrgnlTxRef/i:ReqdExctnDt/i:DtTm/text()", namespaces=ns) == [
        "2026-03-01T21:20:00Z",
        "2026-03-01T21:30:00Z",
    ]
    assert set(root.xpath("//i:OrgnlTxRef/i:Cdtr/i:Pty/i:Nm/text()", namespaces=ns)) == {"王五"}
    assert set(root.xpath("//i:CdtrAcct/i:Id/i:Othr/i:Id/text()", namespaces=ns)) == {
        "6222020200112233"
    }
    assert one("//sh:StopHubOrdr/sh:HoldAmt/text()") == "150000"
    assert one("//i:TxInf[1]/i:CxlRsnInf/i:AddtlInf/text()") == "victim paid twice; hold now"
    assert camt056_to_stop(xml) == stop_order()


def test_fund_return_is_a_frad_recall_to_the_victim() -> None:
    xml = order_to_camt056(return_order())
    assert valid(xml, "camt.056.001.12.xsd")
    root = etree.fromstring(xml)
    ns = {"i": NS056, "sh": SUPL}
    assert root.xpath("//i:OrgnlTxRef/i:Dbtr/i:Pty/i:Nm/text()", namespaces=ns) == ["赵六"]
    assert root.xpath("//i:OrgnlTxRef/i:DbtrAgt//i:Othr/i:Id/text()", namespaces=ns) == ["BANKA"]
    assert root.xpath("//i:TxInf/i:OrgnlIntrBkSttlmAmt/text()", namespaces=ns) == ["999.99"]
    assert root.xpath("//sh:Kind/text()", namespaces=ns) == ["RETURN"]
    assert camt056_to_order(xml) == return_order()


def test_downstream_stop_without_credits_names_the_account_alone() -> None:
    order = stop_order()
    del order.instruction.stop.transactions[:]
    order.instruction.stop.upstream_order_id = "C20260302-0A1B2C3D-O001"
    order.instruction.stop.amount_fen = 30_000
    xml = order_to_camt056(order)
    root = etree.fromstring(xml)
    assert root.xpath("//i:CtrlData", namespaces={"i": NS056}) == []
    assert camt056_to_order(xml) == order


_ID = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-", min_size=1, max_size=35)
_CODE = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=35)
_TEXT_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"
) | st.sampled_from(" \t\n")
_NAME = st.text(_TEXT_CHARS, max_size=140)
_NOTE = st.text(_TEXT_CHARS, max_size=400)
_FEN = st.integers(0, _xml.MAX_FEN)
_SECONDS = st.integers(0, 4_102_444_800)  # 1970 .. 2100
_NANOS = st.integers(0, 999_999_999)


def _order(draw: st.DrawFn, kind: order_pb2.OrderKind.ValueType) -> order_pb2.Order:
    """An order's header and instruction note, as both kinds carry them."""
    order = order_pb2.Order(
        order_id=draw(_ID),
        case_id=draw(_ID),
        kind=kind,
        issued_by=draw(_CODE),
        addressed_to=draw(_CODE),
    )
    order.issue_time.seconds = draw(_SECONDS)
    order.issue_time.nanos = draw(_NANOS)
    order.instruction.case_id = order.case_id
    order.instruction.note = draw(_NOTE)
    return order


@st.composite
def stop_orders(draw: st.DrawFn) -> order_pb2.Order:
    order = _order(draw, order_pb2.ORDER_KIND_STOP)
    s = order.instruction.stop
    s.account.institution_code = draw(_CODE)
    s.account.account_number = draw(st.text(alphabet="0123456789X", min_size=1, max_size=34))
    s.account.holder_name = draw(_NAME)
    s.amount_fen = draw(_FEN)
    s.upstream_order_id = draw(st.just("") | _ID)
    for _ in range(draw(st.integers(0, 4))):
        fact = s.transactions.add(amount_fen=draw(st.integers(0, 10**15)))
        if draw(st.booleans()):
            fact.transaction_time.seconds = draw(_SECONDS)
            fact.transaction_time.nanos = draw(_NANOS)
    return order


@st.composite
def return_orders(draw: st.DrawFn) -> order_pb2.Order:
    order = _order(draw, order_pb2.ORDER_KIND_RETURN)
    r = order.instruction.fund_return
    r.beneficiary.institution_code = draw(_CODE)
    r.beneficiary.account_number = draw(st.text(alphabet="0123456789", min_size=1, max_size=34))
    r.beneficiary.holder_name = draw(_NAME)
    r.amount_fen = draw(_FEN)
    r.freeze_order_id = draw(st.just("") | _ID)
    r.distribution_id = draw(st.just("") | _ID)
    r.beneficiary_case_id = draw(st.just("") | _ID)
    return order


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stop_orders() | return_orders())
def test_order_round_trips_through_a_valid_camt056(order: order_pb2.Order) -> None:
    xml = order_to_camt056(order)
    assert valid(xml, "camt.056.001.12.xsd")
    assert camt056_to_order(xml) == order


# ---- camt.029 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    list(itertools.product(STATUSES, ["", *ALL_REASONS])),
    ids=lambda v: order_pb2.ExecutionStatus.Name(v) if isinstance(v, int) else (v or "none"),
)
def test_every_outcome_and_reason_code_round_trips(
    status: order_pb2.ExecutionStatus.ValueType, code: str
) -> None:
    result = answer(status, code, reason="see the branch's note" if code else "")
    xml = camt029(result)
    assert valid(xml, "camt.029.001.14.xsd")
    root = etree.fromstring(xml)
    ns = {"i": NS029}
    conf = {
        order_pb2.EXECUTION_STATUS_EXECUTED: "CNCL",
        order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED: "PECR",
    }.get(status, "RJCR")
    assert root.xpath("//i:Sts/i:Conf/text()", namespaces=ns) == [conf]
    where = "Cd" if code in ISO_REASONS else "Prtry"
    expected = [code] if code else []
    assert root.xpath(f"//i:CxlStsRsnInf/i:Rsn/i:{where}/text()", namespaces=ns) == expected
    back = camt029_to_execution(xml)
    assert back == Resolution(
        message_id="BANKB-ANS-0001",
        case_id="C20260302-0A1B2C3D",
        answered_by="BANKB",
        answered_to="AFC",
        create_time=T,
        result=result,
    )


@pytest.mark.parametrize(
    ("conf", "code", "status"),
    [
        ("CNCL", "", order_pb2.EXECUTION_STATUS_EXECUTED),
        ("PECR", "AM04", order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED),
        ("RJCR", "NMAT", order_pb2.EXECUTION_STATUS_NO_MATCH),
        ("RJCR", "AC04", order_pb2.EXECUTION_STATUS_REJECTED),
        ("RJCR", "ARDT", order_pb2.EXECUTION_STATUS_REJECTED),
    ],
)
def test_a_bank_camt029_without_the_stophub_supplement_maps_by_iso_codes(
    conf: str, code: str, status: order_pb2.ExecutionStatus.ValueType
) -> None:
    full = camt029(answer(status, code, amount_held_fen=7))
    bare = edit(full, "remove //i:SplmtryData", NS029)
    assert b"StopHubRslt" not in bare and valid(bare, "camt.029.001.14.xsd")
    result = camt029_to_execution(bare).result
    assert result.status == status
    assert result.reason_code == code
    assert result.amount_held_fen == 0  # the numbers travel only in the supplement


@settings(max_examples=60, deadline=None)
@given(
    status=st.sampled_from(STATUSES),
    code=st.sampled_from(["", *ALL_REASONS]),
    reason=_NOTE,
    amounts=st.tuples(_FEN, _FEN, _FEN, _FEN),
    execute=st.none() | st.tuples(_SECONDS, _NANOS),
    created=st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2099, 12, 31),
        timezones=st.sampled_from([UTC]),
    ),
    onward=st.lists(
        st.tuples(_FEN, _FEN, st.none() | _SECONDS, st.just("") | _CODE, _NAME, st.just("") | _ID),
        max_size=3,
    ),
)
def test_any_execution_result_round_trips_through_a_valid_camt029(
    status: order_pb2.ExecutionStatus.ValueType,
    code: str,
    reason: str,
    amounts: tuple[int, int, int, int],
    execute: tuple[int, int] | None,
    created: datetime,
    onward: list[tuple[int, int, int | None, str, str, str]],
) -> None:
    result = answer(status, code, reason=reason)
    (
        result.amount_held_fen,
        result.available_balance_fen,
        result.amount_released_fen,
        result.amount_returned_fen,
    ) = amounts
    if execute is not None:
        result.execute_time.seconds, result.execute_time.nanos = execute
    for fen, carried, when, account, holder, ref in onward:
        t = result.onward_transfers.add(
            amount_fen=fen, carried_fen=carried, transaction_reference=ref
        )
        t.to_account.institution_code = "BANKC" if account else ""
        t.to_account.account_number = account
        t.to_account.holder_name = holder
        if when is not None:
            t.transfer_time.seconds = when
    xml = camt029(result, create_time=created)
    assert valid(xml, "camt.029.001.14.xsd")
    back = camt029_to_execution(xml)
    assert back.result == result
    assert back.create_time == created


# ---- refusals: producing ---------------------------------------------------------------------


def test_a_freeze_or_release_has_no_camt056_form() -> None:
    order = stop_order()
    order.instruction.freeze.amount_fen = 5
    with pytest.raises(UnmappableContent, match=r"^instruction: a freeze instruction .* only stop"):
        order_to_camt056(order)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"order_id": "X" * 36}, r"Assgnmt/Id \(order_id\): 36 characters; .* at most 35"),
        ({"case_id": ""}, r"Case/Id \(case_id\): is mandatory"),
        ({"addressed_to": ""}, r"Assgne \(addressed_to\)/Agt/FinInstnId/Othr/Id: is mandatory"),
        ({"kind": order_pb2.ORDER_KIND_FREEZE}, r"kind: ORDER_KIND_FREEZE contradicts"),
    ],
)
def test_an_order_the_message_cannot_carry_is_refused_by_name(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(UnmappableContent, match=message):
        order_to_camt056(stop_order(**change))


def test_a_control_character_is_refused_not_mangled() -> None:
    order = stop_order()
    order.instruction.note = "line\rbreak"
    with pytest.raises(UnmappableContent, match=r"AddtlInf: character U\+000D"):
        order_to_camt056(order)


def test_an_unknown_reason_code_is_never_written() -> None:
    with pytest.raises(
        UnsupportedCode, match=r"reason_code: unsupported code 'ZZ99'; allowed: AC01"
    ):
        camt029(answer(order_pb2.EXECUTION_STATUS_REJECTED, "ZZ99"))


def test_an_unset_status_is_refused() -> None:
    with pytest.raises(UnsupportedCode, match=r"status: .*EXECUTION_STATUS_UNSPECIFIED"):
        camt029(answer(order_pb2.EXECUTION_STATUS_UNSPECIFIED))


def test_a_naive_create_time_is_refused() -> None:
    with pytest.raises(UnmappableContent, match=r"CreDtTm: .* has no time zone"):
        camt029(answer(), create_time=datetime(2026, 3, 2, 9, 0))


# ---- refusals: reading ----------------------------------------------------------------------


STOP_XML = order_to_camt056(stop_order())
ANSWER_XML = camt029(answer(order_pb2.EXECUTION_STATUS_REJECTED, "AC04", reason="closed 2025"))


def test_not_xml_and_doctypes_are_refused() -> None:
    with pytest.raises(MalformedXml, match="not well-formed"):
        camt056_to_order(b"<Document")
    bomb = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]>' + STOP_XML.split(b"?>", 1)[
        1
    ].replace(b"<Id>AFC</Id>", b"<Id>&a;</Id>", 1)
    with pytest.raises(MalformedXml, match="DOCTYPE"):
        camt056_to_order(bomb)


@pytest.mark.parametrize(
    ("xml", "read", "message"),
    [
        (ANSWER_XML, camt056_to_order, r"expected a camt\.056\.001\.12 .* got camt\.029\.001\.14"),
        (
            STOP_XML,
            camt029_to_execution,
            r"expected a camt\.029\.001\.14 .* got camt\.056\.001\.12",
        ),
        (
            STOP_XML.replace(b"camt.056.001.12", b"camt.056.001.08"),
            camt056_to_order,
            r"got camt\.056\.001\.08 Document",
        ),
        (
            STOP_XML.replace(NS056.encode(), b"urn:example:not-iso"),
            camt056_to_order,
            r"got Document in namespace 'urn:example:not-iso'",
        ),
    ],
)
def test_the_wrong_message_or_namespace_is_refused(xml: bytes, read: object, message: str) -> None:
    assert callable(read)
    with pytest.raises(WrongMessageType, match=message):
        read(xml)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "remove //i:Assgnmt/i:Id",
            r"line \d+: Element '\{[^}]+\}Assgnr': This element is not expected\. Expected is .*Id",
        ),
        ("remove //i:Assgnmt/i:CreDtTm", r"Assgnmt'.*Missing child element.*CreDtTm"),
        ("set //i:TxInf[1]/i:CxlRsnInf/i:Rsn/i:Cd=FRAUD", r"Cd'.*\[facet 'maxLength'\]"),
        ("set //i:TxInf[1]/i:OrgnlIntrBkSttlmAmt=-5.00", r"OrgnlIntrBkSttlmAmt'.*minInclusive"),
        ("set //i:Assgnmt/i:CreDtTm=yesterday", r"CreDtTm'.*'yesterday' is not a valid value"),
    ],
)
def test_a_document_failing_the_official_xsd_is_refused_with_the_element(
    change: str, message: str
) -> None:
    tampered = edit(STOP_XML, change)
    assert not valid(tampered, "camt.056.001.12.xsd")
    with pytest.raises(SchemaViolation, match=message) as caught:
        camt056_to_order(tampered)
    assert caught.value.schema == "camt.056.001.12"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            "set //i:TxInf[2]/i:CxlRsnInf/i:Rsn/i:Cd=DUPL",
            UnsupportedCode,
            r"TxInf\[2\]/CxlRsnInf/Rsn/Cd: unsupported code 'DUPL'; allowed: FRAD$",
        ),
        (
            "set //i:TxInf[1]/i:OrgnlIntrBkSttlmAmt/@Ccy",
            None,
            "",
        ),
        (
            "set //i:TxInf[1]/i:OrgnlIntrBkSttlmAmt=1000.005",
            UnmappableContent,
            r"OrgnlIntrBkSttlmAmt: 1000\.005 CNY is not a whole number of fen",
        ),
        (
            "set //i:CtrlData/i:NbOfTxs=3",
            UnmappableContent,
            r"CtrlData: says 3 transactions summing 1500\.00; the document has 2",
        ),
        (
            "set //i:OrgnlTxRef/i:ReqdExctnDt/i:DtTm=2026-03-01T21:20:00",
            UnmappableContent,
            r"ReqdExctnDt/DtTm: 2026-03-01T21:20:00 has no UTC offset",
        ),
        (
            "set //i:Assgnmt/i:Assgne//i:Othr/i:Issr=CNAPS",
            UnmappableContent,
            r"Assgne/Agt/FinInstnId/Othr/Issr: is 'CNAPS'; StopHub institution codes",
        ),
        (
            "set //i:TxInf[2]//i:CdtrAcct/i:Id/i:Othr/i:Id=6222999999999999",
            UnmappableContent,
            r"TxInf\[2\]/OrgnlTxRef: names another creditor account",
        ),
        (
            "remove //i:FIToFIPmtCxlReq/i:Case",
            UnmappableContent,
            r"Case/Id: is missing; StopHub needs the case id",
        ),
        (
            "set //sh:HoldAmt=-1",
            SchemaViolation,
            r"StopHub supplement StopHubOrdr .*HoldAmt",
        ),
    ],
)
def test_a_valid_camt056_stophub_cannot_map_is_refused_by_name(
    change: str, error: type[Iso20022Error] | None, message: str
) -> None:
    if error is None:  # the currency attribute: a separate edit
        root = etree.fromstring(STOP_XML)
        root.xpath("//i:TxInf[1]/i:OrgnlIntrBkSttlmAmt", namespaces={"i": NS056})[0].set(
            "Ccy", "USD"
        )
        tampered = etree.tostring(root)
        error, message = UnmappableContent, r"OrgnlIntrBkSttlmAmt/@Ccy: currency 'USD'; .* CNY only"
    else:
        tampered = edit(STOP_XML, change)
    with pytest.raises(error, match=message):
        camt056_to_order(tampered)


def test_a_camt056_without_the_supplement_is_a_stop_of_its_credits() -> None:
    bare = edit(STOP_XML, "remove //i:SplmtryData")
    order = camt056_to_order(bare)
    expected = stop_order()
    assert (
        order.instruction.stop.amount_fen
        == 150_000
        == sum(t.amount_fen for t in expected.instruction.stop.transactions)
    )
    assert order == expected


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            "set //i:Sts/i:Conf=MODI",
            UnsupportedCode,
            r"RsltnOfInvstgtn/Sts/Conf: unsupported code 'MODI'; allowed: CNCL, PECR, RJCR$",
        ),
        (
            "set //i:Sts/i:Conf=PDCR",
            UnsupportedCode,
            r"Sts/Conf: unsupported code 'PDCR'",
        ),
        (
            "set //i:CxlStsRsnInf/i:Rsn/i:Cd=AG01",
            UnsupportedCode,
            r"TxInfAndSts/CxlStsRsnInf/Rsn/Cd: unsupported code 'AG01'; allowed: AC04, AM04, "
            r"ARDT, CUST, LEGL, NOAS$",
        ),
        (
            "set //i:CxlStsRsnInf/i:Rsn/i:Cd=NMAT",
            UnsupportedCode,
            r"Rsn/Cd \(NMAT is StopHub's own: use Prtry\): unsupported code 'NMAT'",
        ),
        (
            "set //i:Sts/i:Conf=CNCL",
            UnmappableContent,
            r"GrpCxlSts: is RJCR, which contradicts Sts/Conf CNCL",
        ),
        (
            "set //i:TxInfAndSts/i:TxCxlSts=ACCR",
            UnmappableContent,
            r"TxCxlSts: is ACCR, which contradicts Sts/Conf RJCR",
        ),
        (
            "set //sh:Sts=EXECUTED",
            UnmappableContent,
            r"StopHubRslt/Sts: is EXECUTED, which contradicts Sts/Conf RJCR",
        ),
        (
            "set //sh:Sts=DONE",
            SchemaViolation,
            r"StopHub supplement StopHubRslt .*Sts.*'DONE'",
        ),
        (
            "set //i:OrgnlGrpInfAndSts/i:OrgnlMsgNmId=pacs.008.001.08",
            UnmappableContent,
            r"OrgnlMsgNmId: is 'pacs\.008\.001\.08'; StopHub orders travel as camt\.056\.001\.12",
        ),
        (
            "remove //i:CxlDtls/i:OrgnlGrpInfAndSts",
            UnmappableContent,
            r"OrgnlGrpInfAndSts/OrgnlMsgId: found 0; StopHub needs exactly one, the order id",
        ),
        (
            "remove //i:Sts/i:Conf",
            SchemaViolation,
            r"Sts'.*Missing child element",
        ),
        (
            "set //i:Sts/i:Conf=TOOLONG",
            SchemaViolation,
            r"Conf'.*\[facet 'maxLength'\]",
        ),
    ],
)
def test_a_tampered_camt029_is_refused_by_name(
    change: str, error: type[Iso20022Error], message: str
) -> None:
    with pytest.raises(error, match=message):
        camt029_to_execution(edit(ANSWER_XML, change, NS029))


def test_a_proprietary_code_that_stophub_does_not_know_is_refused() -> None:
    xml = camt029(answer(order_pb2.EXECUTION_STATUS_NO_MATCH, "NMAT"))
    tampered = edit(xml, "set //i:CxlStsRsnInf/i:Rsn/i:Prtry=NOPE", NS029)
    with pytest.raises(UnsupportedCode, match=r"Rsn/Prtry: unsupported code 'NOPE'; allowed: AC01"):
        camt029_to_execution(tampered)


def test_two_different_reason_codes_are_refused() -> None:
    root = etree.fromstring(ANSWER_XML)
    ns = {"i": NS029}
    group = root.xpath("//i:OrgnlGrpInfAndSts", namespaces=ns)[0]
    extra = etree.SubElement(group, f"{{{NS029}}}CxlStsRsnInf")
    etree.SubElement(etree.SubElement(extra, f"{{{NS029}}}Rsn"), f"{{{NS029}}}Cd").text = "LEGL"
    tampered = etree.tostring(root)
    assert valid(tampered, "camt.029.001.14.xsd")
    with pytest.raises(UnmappableContent, match=r"gives 2 different codes \(AC04, LEGL\)"):
        camt029_to_execution(tampered)


def test_reading_gives_the_answer_in_stophub_terms() -> None:
    back = camt029_to_execution(ANSWER_XML)
    assert back.result.status == order_pb2.EXECUTION_STATUS_REJECTED
    assert back.result.reason_code == "AC04"
    assert back.result.reason == "closed 2025"
    assert back.create_time == T and back.create_time.tzinfo is not None
    assert back.create_time - T == timedelta(0)


def test_errors_are_value_errors_with_the_element() -> None:
    with pytest.raises(ValueError, match=re.escape("Sts/Conf")):
        camt029_to_execution(edit(ANSWER_XML, "set //i:Sts/i:Conf=XXXX", NS029))


# ---- a bank's payment system on the bridge ---------------------------------------------------


def _bank_payment_system(core: SimulatedCoreBank, camt056: bytes, now: datetime) -> bytes:
    """What a bank plugs in: a camt.056 in, the core bank's hold, a camt.029 out, using only
    what the ISO document says (and the agent's own outcome -> result mapping)."""
    order = camt056_to_stop(camt056)
    stop = order.instruction.stop
    outcome = core.place_hold(
        order.order_id,
        holder_name=stop.account.holder_name,
        account_number=stop.account.account_number,
        amount_fen=stop.amount_fen,
        credits=[
            (t.transaction_time.ToDatetime(tzinfo=UTC), t.amount_fen) for t in stop.transactions
        ],
    )
    result = order_pb2.ExecutionResult(order_id=order.order_id)
    _hold_result(result, outcome)
    result.execute_time.FromDatetime(now)
    return execution_to_camt029(
        result,
        message_id=f"{order.order_id}-ANS",
        case_id=order.case_id,
        answered_by=order.addressed_to,
        answered_to=order.issued_by,
        create_time=now,
    )


@pytest.mark.parametrize(
    ("moved_on", "holder", "status", "code", "held"),
    [
        (0, "王五", order_pb2.EXECUTION_STATUS_EXECUTED, "", 150_000),
        (30_000, "王五", order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED, "AM04", 120_000),
        (0, "王五五", order_pb2.EXECUTION_STATUS_NO_MATCH, "NMAT", 0),
    ],
)
def test_a_simulated_bank_answers_a_camt056_stop_with_a_camt029(
    moved_on: int,
    holder: str,
    status: order_pb2.ExecutionStatus.ValueType,
    code: str,
    held: int,
) -> None:
    now = T + timedelta(minutes=3)
    core = SimulatedCoreBank("BANKB", lambda: now)
    core.open_account("6222020200112233", holder)
    order = stop_order()
    for fact in order.instruction.stop.transactions:
        core.post_credit(
            "6222020200112233",
            fact.amount_fen,
            time=fact.transaction_time.ToDatetime(tzinfo=UTC),
            reference=f"FRAUD-{fact.amount_fen}",
            from_institution="BANKA",
            from_account="6217000011112222",
            from_holder="赵六",
        )
    if moved_on:
        core.post_debit(
            "6222020200112233",
            moved_on,
            time=T - timedelta(minutes=30),
            reference="OUT-1",
            to_institution="BANKC",
            to_account="6230000000000001",
            to_holder="孙七",
        )
    answer_xml = _bank_payment_system(core, order_to_camt056(order), now)
    assert valid(answer_xml, "camt.029.001.14.xsd")
    back = camt029_to_execution(answer_xml)
    assert (back.answered_by, back.answered_to, back.case_id) == ("BANKB", "AFC", order.case_id)
    assert back.result.order_id == order.order_id
    assert back.result.status == status
    assert back.result.reason_code == code
    assert back.result.amount_held_fen == held == core.held("6222020200112233")
    assert back.result.execute_time.ToDatetime(tzinfo=UTC) == now
    onward = [(t.to_account.account_number, t.amount_fen) for t in back.result.onward_transfers]
    assert onward == ([("6230000000000001", moved_on)] if moved_on else [])


def test_a_prefixed_document_with_a_banks_own_supplement_reads_the_same() -> None:
    root = etree.fromstring(STOP_XML)
    # A bank's own supplementary data, in its own namespace, is left alone.
    splmtry = root.xpath("//i:FIToFIPmtCxlReq/i:SplmtryData", namespaces={"i": NS056})[0]
    own = etree.Element(f"{{{NS056}}}SplmtryData")
    etree.SubElement(
        etree.SubElement(own, f"{{{NS056}}}Envlp"), "{urn:example:bank}Route"
    ).text = "X1"
    splmtry.addprevious(own)
    # Re-serialize with the ISO namespace under a prefix instead of the default.
    iso = NS056.encode()
    prefixed = etree.tostring(root).replace(b'xmlns="' + iso, b'xmlns:c="' + iso)
    prefixed = re.sub(rb"<(/?)(?![a-z0-9]+:)([A-Za-z])", rb"<\1c:\2", prefixed)
    assert b"<c:Document" in prefixed and valid(prefixed, "camt.056.001.12.xsd")
    assert camt056_to_order(prefixed) == stop_order()


def test_two_stophub_supplements_are_refused() -> None:
    root = etree.fromstring(STOP_XML)
    splmtry = root.xpath("//i:FIToFIPmtCxlReq/i:SplmtryData", namespaces={"i": NS056})[0]
    splmtry.addnext(etree.fromstring(etree.tostring(splmtry)))
    with pytest.raises(UnmappableContent, match=r"SplmtryData: 2 StopHub StopHubOrdr supplements"):
        camt056_to_order(etree.tostring(root))


@settings(max_examples=150, deadline=None)
@given(
    which=st.sampled_from(["camt056", "camt029"]),
    pick=st.integers(0, 10_000),
    action=st.sampled_from(["remove", "text", "duplicate"]),
    value=st.text(_TEXT_CHARS, max_size=40) | st.sampled_from(["", "0", "-1", "1.001", "NMAT"]),
)
def test_a_tampered_document_is_read_or_refused_never_crashes(
    which: str, pick: int, action: str, value: str
) -> None:
    xml, read = (
        (STOP_XML, camt056_to_order) if which == "camt056" else (ANSWER_XML, camt029_to_execution)
    )
    root = etree.fromstring(xml)
    elements = list(root.iter())[1:]
    target = elements[pick % len(elements)]
    parent = target.getparent()
    assert parent is not None
    if action == "remove":
        parent.remove(target)
    elif action == "duplicate":
        target.addnext(etree.fromstring(etree.tostring(target)))
    else:
        target.text = value
    try:
        read(etree.tostring(root))
    except Iso20022Error as err:
        assert str(err)
