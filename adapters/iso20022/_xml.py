"""What both messages share: safe parsing, XSD validation, rendering and value conversions."""

from __future__ import annotations

import copy
import functools
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree
from xsdata.exceptions import ParserError
from xsdata.formats.dataclass.models.generics import AnyElement
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig
from xsdata.formats.dataclass.serializers import XmlSerializer
from xsdata.formats.dataclass.serializers.config import SerializerConfig
from xsdata.models.datatype import XmlDate, XmlDateTime

from adapters.iso20022.codes import CURRENCY
from adapters.iso20022.errors import (
    MalformedXml,
    SchemaViolation,
    UnmappableContent,
    WrongMessageType,
)

_HERE: Final = Path(__file__).resolve().parent

CAMT056: Final = "camt.056.001.12"
CAMT029: Final = "camt.029.001.14"
SUPPLEMENT: Final = "stophub.supl.001.01"
ISO_NS_PREFIX: Final = "urn:iso:std:iso:20022:tech:xsd:"
NAMESPACES: Final = {
    CAMT056: ISO_NS_PREFIX + CAMT056,
    CAMT029: ISO_NS_PREFIX + CAMT029,
    SUPPLEMENT: "urn:stophub:xsd:supl.001.01",
}
SUPL_NS: Final = NAMESPACES[SUPPLEMENT]
_SCHEMA_FILES: Final = {
    CAMT056: _HERE / "xsd" / f"{CAMT056}.xsd",
    CAMT029: _HERE / "xsd" / f"{CAMT029}.xsd",
    SUPPLEMENT: _HERE / "ext" / f"{SUPPLEMENT}.xsd",
}

INSTITUTION_ISSUER: Final = "StopHub"
"""FinInstnId/Othr/Issr of an institution named by its StopHub code in FinInstnId/Othr/Id."""

CHINA_TIME: Final = timezone(timedelta(hours=8), "CST")
"""Settlement dates (OrgnlIntrBkSttlmDt) are the calendar date in China Standard Time."""

MAX_FEN: Final = 10**18 - 1
"""ActiveOrHistoricCurrencyAndAmount has totalDigits 18."""

# Characters XML 1.0 cannot carry, and CR, which every XML parser turns into LF.
_NOT_XML: Final = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _parser() -> etree.XMLParser:
    # No entity expansion, no DTD, no network: the input comes from another institution.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@functools.cache
def schema(name: str) -> etree.XMLSchema:
    """The compiled XSD of `name` (camt.056.001.12, camt.029.001.14 or the StopHub supplement)."""
    return etree.XMLSchema(etree.parse(str(_SCHEMA_FILES[name]), parser=_parser()))


def parse(xml: bytes) -> etree._Element:
    if not isinstance(xml, bytes | bytearray):
        raise TypeError(f"the document must be bytes, got {type(xml).__name__}")
    try:
        root = etree.fromstring(bytes(xml), parser=_parser())
    except etree.XMLSyntaxError as err:
        raise MalformedXml(f"not well-formed XML: {err}") from err
    if root.getroottree().docinfo.doctype:
        raise MalformedXml("a DOCTYPE is not allowed in an ISO 20022 document")
    return root


def _describe(tag: str) -> str:
    qname = etree.QName(tag)
    ns = qname.namespace or ""
    if ns.startswith(ISO_NS_PREFIX):
        return f"{ns.removeprefix(ISO_NS_PREFIX)} {qname.localname} ({tag})"
    return f"{qname.localname} in namespace {ns!r}" if ns else f"{qname.localname} (no namespace)"


def check(root: etree._Element, message: str) -> None:
    """Raise unless `root` is a Document of `message` that its official XSD accepts."""
    expected = f"{{{NAMESPACES[message]}}}Document"
    if root.tag != expected:
        raise WrongMessageType(f"{message} ({expected})", _describe(str(root.tag)))
    xsd = schema(message)
    if not xsd.validate(root):
        raise SchemaViolation(message, [f"line {e.line}: {e.message}" for e in xsd.error_log])


def supplement(root: etree._Element, message_element: str, name: str) -> etree._Element | None:
    """The StopHub supplement `name` in the message's SplmtryData, checked against its XSD.

    Supplements in other namespaces (a bank's own) are left alone; a StopHub one of another
    name, or two of them, are refused.
    """
    ns = etree.QName(root).namespace  # `check` made sure it is the message's
    found: list[etree._Element] = []
    path = f"{{{ns}}}{message_element}/{{{ns}}}SplmtryData/{{{ns}}}Envlp/*"
    for element in root.iterfind(path):
        qname = etree.QName(element)
        if qname.namespace != SUPL_NS:
            continue
        if qname.localname != name:
            raise UnmappableContent(
                f"{message_element}/SplmtryData/Envlp/{qname.localname}",
                f"a StopHub supplement of this message is {name}",
            )
        found.append(element)
    if not found:
        return None
    if len(found) > 1:
        raise UnmappableContent(
            f"{message_element}/SplmtryData",
            f"{len(found)} StopHub {name} supplements; one at most",
        )
    xsd = schema(SUPPLEMENT)
    alone = etree.ElementTree(copy.deepcopy(found[0]))
    if not xsd.validate(alone):
        raise SchemaViolation(
            f"StopHub supplement {name} ({SUPL_NS})",
            [f"line {e.line}: {e.message}" for e in xsd.error_log],
        )
    return found[0]


def supl_text(element: etree._Element, child: str) -> str | None:
    found = element.find(f"{{{SUPL_NS}}}{child}")
    return None if found is None else (found.text or "")


def supl_element(qname: str, children: list[tuple[str, str | None]]) -> AnyElement:
    """A StopHub supplement for xsdata's SplmtryData/Envlp; None values are left out."""
    return AnyElement(
        qname=f"{{{SUPL_NS}}}{qname}",
        children=[
            AnyElement(qname=f"{{{SUPL_NS}}}{name}", text=value)
            for name, value in children
            if value is not None
        ],
    )


def render(document: object, message: str) -> bytes:
    """Serialize an xsdata Document, then parse and validate what was written."""
    xml = XmlSerializer(config=SerializerConfig(indent="  ")).render(
        document, ns_map={None: NAMESPACES[message], "sh": SUPL_NS}
    )
    data = xml.encode("utf-8")
    check(parse(data), message)
    return data


_T = TypeVar("_T")


def bind(xml: bytes, document: type[_T]) -> _T:
    """The xsdata object of a document that `check` already accepted."""
    try:
        return XmlParser(config=ParserConfig(fail_on_unknown_properties=True)).from_bytes(
            xml, document
        )
    except ParserError as err:  # pragma: no cover - the XSD already accepted the document
        raise UnmappableContent("Document", f"could not be bound: {err}") from err


# ---- values ---------------------------------------------------------------------------------


def text(element: str, value: str, max_length: int) -> str:
    """`value` for an ISO text element of at most `max_length` characters (at least 1)."""
    if not value:
        raise UnmappableContent(element, "is mandatory and StopHub has no value for it")
    if len(value) > max_length:
        raise UnmappableContent(
            element, f"{len(value)} characters; the schema allows at most {max_length}"
        )
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise UnmappableContent(
            element, f"character U+{ord(bad.group()):04X} cannot travel in an XML document"
        )
    return value


def optional_text(element: str, value: str, max_length: int) -> str | None:
    return text(element, value, max_length) if value else None


def chunks(element: str, value: str, size: int) -> list[str]:
    """A long text as repeated elements of at most `size` characters (AddtlInf)."""
    if not value:
        return []
    text(element, value, len(value))
    return [value[i : i + size] for i in range(0, len(value), size)]


def amount(element: str, fen: int) -> Decimal:
    if fen < 0 or fen > MAX_FEN:
        raise UnmappableContent(element, f"{fen} fen is outside 0..{MAX_FEN}")
    return Decimal(fen).scaleb(-2)


def fen(element: str, value: Decimal, currency: str) -> int:
    if currency != CURRENCY:
        raise UnmappableContent(
            f"{element}/@Ccy", f"currency {currency!r}; StopHub handles {CURRENCY} only"
        )
    cents = value * 100
    if cents != cents.to_integral_value():
        raise UnmappableContent(element, f"{value} {currency} is not a whole number of fen")
    return int(cents)


def xml_datetime(element: str, ts: Timestamp) -> XmlDateTime:
    """A protobuf Timestamp as an ISODateTime in UTC, to the nanosecond."""
    try:
        dt = datetime.fromtimestamp(ts.seconds, UTC)
    except (OverflowError, OSError, ValueError) as err:
        raise UnmappableContent(element, f"time {ts.seconds}s is out of range") from err
    return XmlDateTime(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, ts.nanos, 0)


def china_date(ts: Timestamp) -> XmlDate:
    dt = datetime.fromtimestamp(ts.seconds, UTC).astimezone(CHINA_TIME)
    return XmlDate(dt.year, dt.month, dt.day)


def timestamp(element: str, value: XmlDateTime) -> Timestamp:
    """An ISODateTime as a protobuf Timestamp; a time without an offset is refused."""
    if value.offset is None:
        raise UnmappableContent(
            element, f"{value} has no UTC offset; StopHub needs one (Z or +08:00)"
        )
    try:
        start = datetime(value.year, value.month, value.day, value.hour, value.minute, tzinfo=UTC)
    except ValueError as err:
        raise UnmappableContent(element, f"{value} is not a time StopHub can hold") from err
    seconds = int(start.timestamp()) + value.second - value.offset * 60
    return Timestamp(seconds=seconds, nanos=value.fractional_second or 0)


def timestamp_text(element: str, value: str) -> Timestamp:
    try:
        parsed = XmlDateTime.from_string(value)
    except ValueError as err:
        raise UnmappableContent(element, f"{value!r} is not an ISO date and time") from err
    return timestamp(element, parsed)


def xml_datetime_of(element: str, when: datetime) -> XmlDateTime:
    """An aware datetime as an ISODateTime in UTC (to the microsecond)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise UnmappableContent(element, f"{when.isoformat()} has no time zone")
    utc = when.astimezone(UTC)
    return XmlDateTime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond * 1000, 0
    )


def datetime_of(element: str, value: XmlDateTime) -> datetime:
    """An ISODateTime as an aware UTC datetime (digits below the microsecond are dropped)."""
    ts = timestamp(element, value)
    return datetime.fromtimestamp(ts.seconds, UTC) + timedelta(microseconds=ts.nanos // 1000)


def institution_code(element: str, agent: Any) -> str:
    """The StopHub code in a BranchAndFinancialInstitutionIdentification8 (`Othr/Id` with
    StopHub's issuer), the same type in camt.056's and camt.029's bindings."""
    if agent is None:
        raise UnmappableContent(element, "is missing; StopHub needs the institution")
    othr = agent.fin_instn_id.othr
    if othr is None:
        raise UnmappableContent(
            f"{element}/FinInstnId/Othr",
            f"is missing; StopHub names institutions by their StopHub code in Othr/Id with "
            f"Issr {INSTITUTION_ISSUER!r} (a BIC or clearing id is not mapped)",
        )
    if othr.issr != INSTITUTION_ISSUER:
        raise UnmappableContent(
            f"{element}/FinInstnId/Othr/Issr",
            f"is {othr.issr!r}; StopHub institution codes have Issr {INSTITUTION_ISSUER!r}",
        )
    return str(othr.id)


def party_code(element: str, party: Any) -> str:
    """The StopHub code of a Party50Choice, which must be an agent (`Agt`)."""
    if party.agt is None:
        raise UnmappableContent(f"{element}/Pty", "StopHub members are agents: use Agt")
    return institution_code(f"{element}/Agt", party.agt)
