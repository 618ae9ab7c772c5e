"""The SLA report as a compliance officer reads it (docs/sla-report.md), drawn from figures
made here by hand: the summary at the top, clock kinds by their names, reminders and
escalations apart, no label cut by its chart, a case timeline where a five-minute clock and a
six-month freeze are both readable, times in the display zone, names masked, and the line
that states the digest of all the others.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hub.render.report import render_html
from hub.render.wording import set_display_zone
from hub.service.slareport import (
    CLOCK_NAMES,
    CaseEventRow,
    CaseTimeline,
    ClockRow,
    LogRow,
    SlaReport,
    clock_name,
    period,
)
from hub.system.policy import load_policy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CASE = "C20260302-0A0B0C0D"
RAW_KINDS = {k for k in CLOCK_NAMES if "_" in k}


def clock(
    n: int,
    kind: str,
    responsible: str,
    start: timedelta,
    window: timedelta,
    took: timedelta | None,
    *,
    order: str = "",
    state: str | None = None,
    breached: bool = False,
) -> ClockRow:
    started = T0 + start
    if state is None:
        state = "open" if took is None else ("met" if took <= window else "missed")
    return ClockRow(
        clock_id=f"k{n}",
        case_id=CASE,
        order_id=f"{CASE}-{order}" if order else "",
        kind=kind,
        responsible=responsible,
        started_at=started,
        deadline_at=started + window,
        state=state,
        breached=breached or state == "missed",
        stopped_at=None if took is None else started + took,
        stopped_by="x" if took is not None else "",
    )


def step(n: int, c: ClockRow, event: str, after: timedelta) -> LogRow:
    return LogRow(
        n,
        c.clock_id,
        CASE,
        c.order_id,
        c.kind,
        event,
        c.started_at + after,
        c.deadline_at,
        c.responsible,
        0.0,
        "to " + c.responsible,
    )


CLOCKS = [
    clock(1, "verify", "BANKA", timedelta(0), timedelta(minutes=5), timedelta(seconds=30)),
    clock(
        2,
        "stop",
        "BANKB",
        timedelta(minutes=1),
        timedelta(minutes=10),
        timedelta(minutes=12),
        order="O001",
    ),
    clock(
        3,
        "freeze_term",
        "CENTRE",
        timedelta(minutes=20),
        timedelta(days=182),
        timedelta(days=30),
        order="O002",
    ),
    clock(
        4,
        "fund_return",
        "BANKB",
        timedelta(days=30, minutes=1),
        timedelta(days=3),
        timedelta(hours=2),
        order="O003",
    ),
    clock(
        5,
        "verify",
        "BANKB",
        timedelta(hours=1),
        timedelta(minutes=5),
        None,
        state="ended",
        breached=True,
    ),
]
LOG = [
    step(1, CLOCKS[1], "reminder", timedelta(minutes=8)),
    step(2, CLOCKS[1], "breach", timedelta(minutes=10)),
    step(3, CLOCKS[4], "reminder", timedelta(minutes=4)),
    step(4, CLOCKS[4], "breach", timedelta(minutes=5)),
    step(5, CLOCKS[4], "regulator", timedelta(minutes=10)),
    step(6, CLOCKS[2], "renewal_reminder", timedelta(days=175)),
]
TIMELINE = CaseTimeline(
    case_id=CASE,
    found=True,
    reporting_institution="BANKA",
    state="closed",
    created_at=T0,
    events=[
        CaseEventRow(T0, "report.received", "BANKA", "report of 1 transaction(s) by Zhang San"),
        CaseEventRow(
            T0 + timedelta(minutes=1),
            "order.issued",
            "HUB",
            f"stop order {CASE}-O001 to BANKB: hold ************0002 (Li Si)",
        ),
    ],
    clocks=CLOCKS[:4],
    log=LOG[:2] + LOG[5:],
    phases=[("report → verified (verification)", timedelta(seconds=30))],
    personal_names=frozenset({"Zhang San", "Li Si"}),
)


def make(**changes: object) -> SlaReport:
    report = SlaReport(
        start=T0,
        end=T0 + timedelta(days=40),
        generated_at=T0 + timedelta(days=41),
        clocks=list(CLOCKS),
        log=list(LOG),
        cases=[TIMELINE],
        database="sqlite:////srv/stophub.db",
        span=(T0, T0 + timedelta(days=30, minutes=1)),
    )
    for name, value in changes.items():
        setattr(report, name, value)
    return report


def parse(html: str) -> ET.Element:
    return ET.fromstring(html.removeprefix("<!DOCTYPE html>"))


def visible_text(element: ET.Element) -> str:
    """What a reader sees: text nodes, not attributes, and not the SVG's hover titles."""
    parts = []

    def walk(e: ET.Element) -> None:
        if e.tag in ("style", "title"):
            parts.append(e.tail or "")
            return
        parts.append(e.text or "")
        for child in e:
            walk(child)
        parts.append(e.tail or "")

    walk(element)
    return " ".join(parts)


@pytest.fixture
def zone() -> Iterator[None]:
    yield
    set_display_zone(UTC)


def test_the_summary_per_clock_kind_comes_first() -> None:
    root = parse(render_html(make()))
    body = root.find("body")
    assert body is not None
    headings = [h.text for h in body.iter("h2")]
    assert headings[0] == "Summary"
    table = body.find(".//table[@id='kinds']")
    assert table is not None
    rows = {tr.attrib["data-clock"]: tr for tr in table.iter("tr") if "data-clock" in tr.attrib}
    # In the order a case meets them.
    assert list(rows) == ["verify", "stop", "freeze_term", "fund_return"]

    def cell(kind: str, cls: str) -> ET.Element:
        found = rows[kind].find(f"td[@class='{cls}']")
        assert found is not None, (kind, cls)
        return found

    # verify: one met in 30 s, one ended past its breach: judged 2, met 1.
    assert cell("verify", "text clock").text == "verification"
    assert cell("verify", "count").text == "2"
    assert cell("verify", "share-met").text == "50%"
    assert cell("verify", "median").get("data-seconds") == "30.000"
    assert cell("verify", "deadline").text == "5m 0s"
    assert cell("verify", "median-ratio").text == "10%"
    assert cell("stop", "share-met").text == "0%"
    assert cell("fund_return", "share-met").text == "100%"
    assert cell("fund_return", "text clock").text == "fund return"


def test_reminders_breach_notices_and_escalations_are_counted_apart() -> None:
    root = parse(render_html(make()))
    for table_id, key in (("kinds", ("verify",)), ("summary", ("BANKB", "verify"))):
        table = root.find(f".//table[@id='{table_id}']")
        assert table is not None
        for tr in table.iter("tr"):
            if (tr.get("data-institution"), tr.get("data-clock"))[-len(key) :] != key:
                continue
            got = {td.get("class"): td.text for td in tr.iter("td")}
            assert (got["reminders"], got["breach-notices"], got["escalations"]) == (
                "1",
                "1",
                "1",
            )
            break
        else:
            raise AssertionError(f"no row {key} in {table_id}")
    kinds = root.find(".//table[@id='kinds']")
    assert kinds is not None
    freeze = next(tr for tr in kinds.iter("tr") if tr.get("data-clock") == "freeze_term")
    assert [td.text for td in freeze if td.get("class") == "reminders"] == ["1"]


def test_clock_kinds_are_written_by_their_names_everywhere() -> None:
    html = render_html(make())
    text = visible_text(parse(html))
    for kind in RAW_KINDS:
        assert kind not in text, kind
    assert "fund return" in text and "freeze term" in text and "stop answer" in text


def test_every_clock_of_the_policy_has_a_name() -> None:
    assert {c.name for c in load_policy().clocks} == set(CLOCK_NAMES)
    assert clock_name("night_watch") == "night watch"


def test_the_definitions_speak_plainly() -> None:
    root = parse(render_html(make()))
    note = root.find(".//p[@id='definitions']")
    assert note is not None and note.text
    for jargon in ("statistics", "quantiles", "Python", "method=", "_at", "inclusive"):
        assert jargon not in note.text, jargon
    assert "Median" in note.text and "90th percentile" in note.text


def text_extent(element: ET.Element, font_px: float) -> tuple[float, float]:
    """Where a label stands, at a width no wider than a sans-serif font draws it."""
    x = float(element.get("x", "0"))
    width = len("".join(element.itertext())) * 0.6 * font_px
    anchor = element.get("text-anchor", "start")
    if anchor == "end":
        return x - width, x
    if anchor == "middle":
        return x - width / 2, x + width / 2
    return x, x + width


def test_no_chart_label_is_cut_by_its_box() -> None:
    html = render_html(make())
    match = re.search(r"svg \{[^}]*font-size: (\d+)px", html)
    assert match is not None
    font_px = float(match.group(1))
    svgs = list(parse(html).iter("svg"))
    assert {s.get("id") for s in svgs} >= {"durations-chart", "breaches-chart"}
    assert any(s.get("class") == "case-timeline" for s in svgs)
    for svg in svgs:
        _, _, width, _ = (float(v) for v in svg.attrib["viewBox"].split())
        assert float(svg.attrib["width"]) == width
        for text in svg.iter("text"):
            left, right = text_extent(text, font_px)
            assert left >= 0 and right <= width, (svg.get("id"), text.text, left, right, width)


def test_a_five_minute_clock_and_a_six_month_freeze_are_both_readable() -> None:
    root = parse(render_html(make()))
    svg = root.find(".//svg[@class='case-timeline']")
    assert svg is not None
    when = [r for r in svg.iter("rect") if r.get("class") == "when"]
    taken = [r for r in svg.iter("rect") if r.get("class") == "taken"]
    assert len(when) == len(taken) == len(TIMELINE.clocks)
    # When: the clocks in the order they started, on a logarithmic axis of the case's time.
    starts = [float(r.attrib["x"]) for r in when]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    ticks = {
        t.text: float(t.attrib["x"]) for t in svg.iter("text") if t.get("text-anchor") == "middle"
    }
    assert {"1 min", "1 h", "1 day", "30 days", "0%", "100%", "200%"} <= set(ticks)
    assert starts[0] < ticks["1 min"] < starts[2] < ticks["1 h"] and ticks["30 days"] <= starts[3]
    assert any("logarithmic" in (t.text or "") for t in svg.iter("text"))
    # Against its deadline: each clock's time taken as a share of its own deadline, so the
    # 30 s verification (10%), the 12-minute stop (120%), the 30-day freeze (16%) and the
    # 2-hour return (3%) are bars whose lengths can be compared, whatever their size.
    half = ticks["100%"] - ticks["0%"]
    shares = [float(r.attrib["width"]) / half for r in taken]
    expected = [(c.stopped_at - c.started_at) / c.window for c in TIMELINE.clocks if c.stopped_at]
    assert shares == pytest.approx(expected, abs=0.01)
    labels = [t.text or "" for t in svg.iter("text") if t.get("text-anchor") == "end"]
    # Rows are numbered, name their order (as O001) and who answers for them.
    assert labels[1:] == [
        "1. verification · BANKA",
        "2. stop answer · O001 · BANKB",
        "3. freeze term · O002 · CENTRE",
        "4. fund return · O003 · BANKB",
    ]
    table = root.find(".//table[@class='clocks']")
    assert table is not None
    numbered = [[td.text for td in tr][:3] for tr in table.iter("tr") if tr.find("td") is not None]
    assert numbered[1] == ["2", "stop answer", "O001"]


def test_times_are_in_the_display_zone_and_the_zone_is_named(zone: None) -> None:
    set_display_zone(ZoneInfo("Asia/Shanghai"))
    # A breach due at 17:00 UTC on March 2 is one of March 3 in Beijing.
    late = clock(
        9,
        "verify",
        "BANKC",
        timedelta(hours=7, minutes=55),
        timedelta(minutes=5),
        None,
        state="ended",
        breached=True,
    )
    report = make(clocks=[*CLOCKS, late], zone=ZoneInfo("Asia/Shanghai"))
    html = render_html(report)
    root = parse(html)
    period_line = root.find(".//p[@id='period']")
    assert period_line is not None and "Times in Asia/Shanghai" in (period_line.text or "")
    assert "2026-03-02T17:00:00+08:00" in html and "T09:00:00Z" not in html
    headings = [th.text or "" for th in root.iter("th")]
    assert "At (Asia/Shanghai)" in headings and "Day (Asia/Shanghai)" in headings
    days = {
        tr.get("data-day")
        for tr in root.iter("tr")
        if tr.get("data-day") and tr.get("data-institution") == "BANKC"
    }
    assert days == {"2026-03-03"}


def test_names_are_masked_unless_personal_data_is_asked_for() -> None:
    masked = render_html(make())
    assert "Zhang San" not in masked and "Li Si" not in masked
    assert "by Z********" in masked and "(L****)" in masked
    assert "stop order O001 to BANKB" in masked
    root = parse(masked)
    note = root.find(".//p[@id='masking']")
    assert note is not None and "--personal-data" in (note.text or "")
    shown = render_html(make(personal_data=True))
    assert "by Zhang San" in shown and "(Li Si)" in shown


def test_one_line_states_the_digest_of_all_the_others() -> None:
    html = render_html(make(), "sla.html")
    lines = html.splitlines(keepends=True)
    marked = [line for line in lines if 'id="content-sha256"' in line]
    assert len(marked) == 1
    stated = re.search(r"<code>([0-9a-f]{64})</code>", marked[0])
    assert stated is not None
    rest = "".join(line for line in lines if line is not marked[0])
    assert hashlib.sha256(rest.encode("utf-8")).hexdigest() == stated.group(1)
    # Names and free text cannot forge the line: they are escaped.
    forged = CaseEventRow(T0, "note", "HUB", '<p id="content-sha256">')
    report = make(cases=[CaseTimeline(**{**TIMELINE.__dict__, "events": [forged]})])
    assert render_html(report).count('id="content-sha256"') == 1


def test_an_empty_period_says_so() -> None:
    root = parse(render_html(make(clocks=[], log=[], cases=[])))
    empty = root.find(".//p[@id='empty']")
    assert empty is not None
    assert (empty.text or "").startswith("No clock started in this period.")
    assert "2026-03-02T09:00:00Z to 2026-04-01T09:01:00Z" in (empty.text or "")
    assert root.find(".//svg") is None and root.find(".//table[@id='summary']") is None
    nothing = parse(render_html(make(clocks=[], log=[], cases=[], span=None)))
    assert "holds no clock at all" in "".join(nothing.itertext())


def test_without_dates_the_period_covers_every_clock() -> None:
    span = (datetime(2026, 12, 4, 17, 6, tzinfo=UTC), datetime(2027, 1, 3, 17, 45, tzinfo=UTC))
    today = datetime(2026, 12, 4, 18, tzinfo=UTC)
    assert period(None, None, span, UTC, today) == (
        datetime(2026, 12, 4, tzinfo=UTC),
        datetime(2027, 1, 4, tzinfo=UTC),
    )
    shanghai = ZoneInfo("Asia/Shanghai")
    start, end = period(None, None, span, shanghai, today)
    assert start == datetime(2026, 12, 5, tzinfo=shanghai) and end == datetime(
        2027, 1, 5, tzinfo=shanghai
    )
    given = datetime(2026, 11, 1, tzinfo=UTC)
    assert period(given, None, span, UTC, today) == (given, datetime(2027, 1, 4, tzinfo=UTC))
    assert period(None, given, span, UTC, today) == (datetime(2026, 10, 31, tzinfo=UTC), given)
    assert period(None, None, None, UTC, today) == (
        datetime(2026, 12, 4, tzinfo=UTC),
        datetime(2026, 12, 5, tzinfo=UTC),
    )


def test_the_docs_name_the_clocks_as_the_report_does() -> None:
    """docs/sla-report.md's table of clock names is the report's (`CLOCK_NAMES`)."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "sla-report.md"
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", docs.read_text(), re.MULTILINE)
    assert {kind: (name.strip(), what.strip()) for kind, name, what in rows} == CLOCK_NAMES
