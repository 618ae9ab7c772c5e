"""`stophub report sla` on a real database: the report's numbers are the SLA log's numbers.

Reports from BANKA and BANKB over three days, some verified in time and some late (with the
sweep firing reminders, breaches and escalations), one left open and one outside the period;
the report is written through the CLI and its figures are compared with figures computed here,
independently, from the `clocks` and `sla_log` rows.
"""

from __future__ import annotations

import statistics
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from hub.cli.report import report
from hub.service.commands.case import CREATE_REPORT, VERIFY_REPORT
from hub.store.tables import clocks, sla_log
from hub.system.policy import load_policy
from stophub.v1 import account_pb2, case_pb2

from .test_hub_on_db import Net, confirm

ACCOUNTS = {
    "BANKA": account_pb2.AccountRef(
        institution_code="BANKA", account_number="6222010000000001", holder_name="Zhang San"
    ),
    "BANKB": account_pb2.AccountRef(
        institution_code="BANKB", account_number="6222020000000002", holder_name="Li Si"
    ),
}
ESCALATIONS = {"reminder", "breach", "regulator"}
START = datetime(2026, 3, 2, tzinfo=UTC)  # T0's day
END = datetime(2026, 3, 4, tzinfo=UTC)  # `--to 2026-03-03` includes March 3


def report_body(reporter: str, now: datetime) -> Any:
    payee = ACCOUNTS["BANKB" if reporter == "BANKA" else "BANKA"]
    pb = case_pb2.Report(
        victim=case_pb2.Victim(name="Zhang San", id_number="110101199001011234", phone="138"),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        description="caller <posing> as police & asked for a 'safe account' transfer",
    )
    t = pb.transactions.add(
        amount_fen=1_000_000,
        payer=ACCOUNTS[reporter],
        payee=payee,
        channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
        transaction_reference=f"TX-{uuid.uuid4().hex[:8]}",
    )
    t.transaction_time.FromDatetime(now - timedelta(minutes=20))
    return pb


def open_case(net: Net, reporter: str) -> str:
    case = net.call(reporter, CREATE_REPORT, report_body(reporter, net.clock.now()), case_pb2.Case)
    return str(case.case_id)


def verify_after(net: Net, reporter: str, case_id: str, wait: timedelta) -> None:
    """Wait (sweeping every 30 s of case time, so steps fire), then confirm the report."""
    step = timedelta(seconds=30)
    waited = timedelta(0)
    while waited + step <= wait:
        net.clock.advance(step)
        waited += step
        net.hub.sweep()
    net.clock.advance(wait - waited)
    net.call(reporter, VERIFY_REPORT, confirm(case_id), case_pb2.Case)


def build(net: Net) -> dict[str, str]:
    """The cases, by name."""
    net.hub.clock_policy = load_policy()
    cases = {}
    # Day 1 (March 2): BANKA in time, BANKB in time, BANKA late, BANKA never verified.
    cases["a_fast"] = open_case(net, "BANKA")
    verify_after(net, "BANKA", cases["a_fast"], timedelta(minutes=1, seconds=10))
    cases["b_fast"] = open_case(net, "BANKB")
    verify_after(net, "BANKB", cases["b_fast"], timedelta(minutes=2, seconds=45))
    cases["a_late"] = open_case(net, "BANKA")
    verify_after(net, "BANKA", cases["a_late"], timedelta(minutes=6, seconds=20))
    cases["a_open"] = open_case(net, "BANKA")
    net.clock.advance(timedelta(minutes=3))
    net.hub.sweep()
    # Day 2 (March 3): BANKB late (before the regulator step), BANKA in time.
    net.clock.set(datetime(2026, 3, 3, 10, tzinfo=UTC))
    net.hub.sweep()
    cases["b_late"] = open_case(net, "BANKB")
    verify_after(net, "BANKB", cases["b_late"], timedelta(minutes=7, seconds=5))
    cases["a_fast2"] = open_case(net, "BANKA")
    verify_after(net, "BANKA", cases["a_fast2"], timedelta(minutes=3, seconds=30))
    net.clock.advance(timedelta(minutes=30))
    net.hub.sweep()
    # March 5: outside the period.
    net.clock.set(datetime(2026, 3, 5, 8, tzinfo=UTC))
    cases["outside"] = open_case(net, "BANKB")
    verify_after(net, "BANKB", cases["outside"], timedelta(minutes=9))
    return cases


def expected_figures(net: Net) -> tuple[dict[tuple[str, str], dict[str, Any]], Counter[Any]]:
    """Per (institution, clock), from the rows; and breaches per (institution, day)."""
    with net.store.read_engine.connect() as conn:
        clock_rows = [r for r in conn.execute(select(clocks)) if START <= r.started_at < END]
        log_rows = list(conn.execute(select(sla_log)))
    ids = {r.clock_id for r in clock_rows}
    escalations = Counter(
        r.clock_id for r in log_rows if r.clock_id in ids and r.event in ESCALATIONS
    )
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in clock_rows:
        groups[(r.responsible, r.kind)].append(r)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    breaches: Counter[tuple[str, date]] = Counter()
    for key, rows in groups.items():
        state = [str(getattr(r.state, "value", r.state)) for r in rows]
        stopped = [
            (r.stopped_at - r.started_at).total_seconds()
            for r, s in zip(rows, state, strict=True)
            if s in ("met", "missed")
        ]
        if len(stopped) >= 2:
            median = statistics.median(stopped)
            p90 = statistics.quantiles(stopped, n=10, method="inclusive")[8]
        elif stopped:
            median = p90 = stopped[0]
        else:
            median = p90 = None
        breached = [r for r, s in zip(rows, state, strict=True) if r.breached or s == "missed"]
        for r in breached:
            breaches[(r.responsible, r.deadline_at.date())] += 1
        out[key] = {
            "count": len(rows),
            "stopped": len(stopped),
            "median": None if median is None else f"{median:.3f}",
            "p90": None if p90 is None else f"{p90:.3f}",
            "met": state.count("met"),
            "missed": state.count("missed"),
            "ended": state.count("ended"),
            "open": state.count("open"),
            "breached": len(breached),
            "escalations": sum(escalations[r.clock_id] for r in rows),
        }
    return out, breaches


def reported_figures(root: ET.Element) -> dict[tuple[str, str], dict[str, Any]]:
    table = root.find(".//table[@id='summary']")
    assert table is not None
    out = {}
    for tr in table.iter("tr"):
        if "data-institution" not in tr.attrib:
            continue
        cells = {td.get("class", "").split()[-1]: td for td in tr.iter("td")}
        figures: dict[str, Any] = {
            name: int(cells[name].text or "")
            for name in ("count", "stopped", "met", "missed", "ended", "open", "breached")
        }
        figures["escalations"] = int(cells["escalations"].text or "")
        for name in ("median", "p90"):
            figures[name] = cells[name].get("data-seconds") or None
        out[(tr.attrib["data-institution"], tr.attrib["data-clock"])] = figures
    return out


def test_report_numbers_match_the_sla_log(net: Net, tmp_path: Path, database_url: str) -> None:
    cases = build(net)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        report,
        [
            "sla",
            "--db",
            database_url,
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-03",
            "--out",
            str(out),
            "--case",
            cases["a_late"],
            "--case",
            cases["b_fast"],
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    html = out.read_text(encoding="utf-8")
    root = ET.fromstring(html.removeprefix("<!DOCTYPE html>"))  # well-formed as XML

    expected, breaches = expected_figures(net)
    reported = reported_figures(root)
    assert reported == expected

    # The scenario is what it claims to be, so the comparison above compares something.
    verify_a, verify_b = expected[("BANKA", "verify")], expected[("BANKB", "verify")]
    # a_open's clock ran its whole ladder unmet: ended, breached, never in the durations.
    assert (verify_a["count"], verify_a["met"], verify_a["missed"], verify_a["ended"]) == (
        4,
        2,
        1,
        1,
    )
    assert (verify_a["stopped"], verify_a["breached"]) == (3, 2)
    assert (verify_b["count"], verify_b["met"], verify_b["missed"]) == (2, 1, 1)
    assert verify_a["escalations"] >= 4  # a_late: reminder, breach; a_open: reminder, breach
    assert verify_b["escalations"] == 2  # b_late: reminder, breach
    assert verify_b["median"] == f"{(165 + 425) / 2:.3f}"
    assert ("HUB", "record") in expected and ("CENTRE", "stop_issue") in expected
    # The case outside the period is not counted.
    assert sum(f["count"] for k, f in expected.items() if k[1] == "verify") == 6

    # Breaches per institution per day, as charted and tabulated.
    table = root.find(".//table[@id='breaches']")
    assert table is not None
    tabulated = Counter(
        {
            (tr.attrib["data-institution"], date.fromisoformat(tr.attrib["data-day"])): int(
                tr.findall("td")[2].text or ""
            )
            for tr in table.iter("tr")
            if "data-day" in tr.attrib
        }
    )
    assert tabulated == breaches
    assert breaches[("BANKB", date(2026, 3, 3))] >= 1 and breaches[("BANKA", date(2026, 3, 2))] >= 1
    chart = root.find(".//svg[@id='breaches-chart']")
    assert chart is not None
    titles = [t.text or "" for t in chart.iter("title")]
    for (inst, day), n in breaches.items():
        assert f"{inst} {day.isoformat()}: {n}" in titles

    durations = root.find(".//svg[@id='durations-chart']")
    assert durations is not None
    assert len(durations.findall(".//rect")) >= 2 * sum(
        1 for f in expected.values() if f["stopped"]
    )

    # The case timelines: the case's events and every clock step of its SLA log.
    with net.store.read_engine.connect() as conn:
        late_log = list(conn.execute(select(sla_log).where(sla_log.c.case_id == cases["a_late"])))
    section = root.find(f".//section[@data-case='{cases['a_late']}']")
    assert section is not None
    assert section.find(".//svg") is not None
    steps = [tr for tr in section.iter("tr") if "clock-step" in tr.get("class", "")]
    assert Counter((tr.attrib["data-clock-id"], tr.findall("td")[2].text) for tr in steps) == (
        Counter((r.clock_id, r.event) for r in late_log)
    )
    assert {"breach", "missed", "reminder"} <= {tr.findall("td")[2].text for tr in steps}
    events = [tr.findall("td")[2].text for tr in section.iter("tr") if tr.get("class") == "event"]
    assert "report.received" in events and "report.verified" in events
    assert root.find(f".//section[@data-case='{cases['b_fast']}']") is not None
    assert root.find(f".//section[@data-case='{cases['outside']}']") is None

    # Self-contained: no script, no external resource, the definitions in the footnote.
    assert "<script" not in html.lower()
    for element in root.iter():
        for attr in ("src", "href", "{http://www.w3.org/1999/xlink}href"):
            value = element.get(attr, "")
            assert not value.startswith(("http://", "https://", "//")), (element.tag, value)
    assert "http://" not in html and "https://" not in html
    assert "method='inclusive'" in html.replace("&#x27;", "'")


def test_unknown_case_and_bad_period_are_refused(
    net: Net, tmp_path: Path, database_url: str
) -> None:
    out = tmp_path / "r.html"
    base = ["sla", "--db", database_url, "--out", str(out)]
    result = CliRunner().invoke(
        report, [*base, "--from", "2026-03-02", "--to", "2026-03-03", "--case", "NOPE"]
    )
    assert result.exit_code == 1 and "no case 'NOPE'" in result.output
    assert not out.exists()
    result = CliRunner().invoke(report, [*base, "--from", "2026-03-03", "--to", "2026-03-01"])
    assert result.exit_code == 2
    result = CliRunner().invoke(report, [*base, "--from", "March", "--to", "2026-03-01"])
    assert result.exit_code == 2
    # An empty period still gives a whole report.
    result = CliRunner().invoke(report, [*base, "--from", "2027-01-01", "--to", "2027-01-02"])
    assert result.exit_code == 0, result.output
    root = ET.fromstring(out.read_text(encoding="utf-8").removeprefix("<!DOCTYPE html>"))
    assert root.find(".//svg[@id='durations-chart']") is not None
