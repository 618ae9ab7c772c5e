"""`stophub report outcomes` on a real database (SQLite and PostgreSQL): the figures equal values
computed by hand for a small network, and equal figures recomputed here, independently, from
the signed envelopes the audit log keeps (docs/outcomes.md: every figure is a count over signed
records).

The network, in UTC (the hub's case time, and the display zone of these tests):
- March 2: BANKA reports case A (¥50,000 paid to MULE_B); the standing rule stops MULE_B, which
  answers partially executed, holding ¥40,000, and reports ¥10,000 sent on to a PAYX account;
  the rule follows it with a downstream stop PAYX answers holding ¥10,000. The centre freezes
  the ¥40,000.
- March 3: BANKB reports case B (¥20,000 to MULE_A), whose stop finds no match; BANKA reports
  case C (¥10,000 to another BANKB account), whose stop holds it all.
- March 4: BANKB returns ¥30,000 of the frozen money to case A's victim.
"""

from __future__ import annotations

import csv
import io
import statistics
import uuid
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from hub.cli import main
from hub.cli.report import report as report_cli
from hub.crypto.listkey import ListKey
from hub.service.commands import lead as ld
from hub.service.commands.case import CREATE_REPORT, VERIFY_REPORT
from hub.service.commands.order import ANSWER_ORDER, ISSUE_ORDER, SET_AUTO_STOP_RULE
from hub.service.outcomes import FIGURE_NAMES, WARNING_FIGURES
from hub.service.ports import CaseQuery
from hub.store.tables import audit_log
from stophub.v1 import (
    account_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    grade_pb2,
    lead_pb2,
    order_pb2,
)

from .test_hub_on_db import MULE_B, Net, confirm, executed

# Spelt out by hand in the test below. This network sends one warning only, from a lead's
# triage (L5): the warnings' figures are recomputed in test_outcomes_warnings.py, and here
# only seen to count that one.
FIGURES = tuple(name for name in FIGURE_NAMES if name not in WARNING_FIGURES)

MULE_A = account_pb2.AccountRef(
    institution_code="BANKA", account_number="6222010000000777", holder_name="Sun Qi"
)
MULE_B2 = account_pb2.AccountRef(
    institution_code="BANKB", account_number="6222020000000888", holder_name="Wu Jiu"
)
ONWARD = account_pb2.AccountRef(
    institution_code="PAYX", account_number="PX-0000000099", holder_name="Zhao Liu"
)
PAYERS = {
    "BANKA": account_pb2.AccountRef(
        institution_code="BANKA", account_number="6222010000000001", holder_name="Zhang San"
    ),
    "BANKB": account_pb2.AccountRef(
        institution_code="BANKB", account_number="6222020000000005", holder_name="Zhou Ba"
    ),
}
DAY = [datetime(2026, 3, d, tzinfo=UTC) for d in (2, 3, 4, 5)]
L5_AT_RISK_FEN = 700_000


def report_of(reporter: str, payee: Any, amount: int, now: datetime) -> Any:
    pb = case_pb2.Report(
        victim=case_pb2.Victim(name="Zhang San", id_number="110101199001011234", phone="138"),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        description="asked for a 'safe account' transfer",
    )
    t = pb.transactions.add(
        amount_fen=amount,
        payer=PAYERS[reporter],
        payee=payee,
        channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
        transaction_reference=f"TX-{uuid.uuid4().hex[:8]}",
    )
    t.transaction_time.FromDatetime(now - timedelta(minutes=20))
    return pb


def issue(net: Net, case_id: str, **instruction: Any) -> str:
    body = order_pb2.OrderInstruction(case_id=case_id, **instruction)
    return str(net.call("CENTRE", ISSUE_ORDER, body, order_pb2.Order).order_id)


def build(net: Net) -> dict[str, timedelta]:
    """The network of the module's docstring; returns each case's time to its first stop."""
    clock = net.clock
    rule = order_pb2.AutoStopRule(
        rule_id="AUTO-1", enabled=True, max_amount_fen=100_000_000, follow_onward_transfers=True
    )
    net.call("CENTRE", SET_AUTO_STOP_RULE, rule, order_pb2.AutoStopRule)
    firsts = {}

    # March 2: case A.
    clock.set(DAY[0] + timedelta(hours=9))
    a = net.call(
        "BANKA", CREATE_REPORT, report_of("BANKA", MULE_B, 5_000_000, clock.now()), case_pb2.Case
    )
    a_at = clock.now()
    clock.advance(timedelta(minutes=1))
    a = net.call("BANKA", VERIFY_REPORT, confirm(a.case_id), case_pb2.Case)
    stop_b = a.orders[0].order_id
    clock.advance(timedelta(minutes=3))
    answer = executed(stop_b, clock.now(), amount_held_fen=4_000_000)
    answer.status = order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED
    answer.reason_code = "AM04"
    onward = answer.onward_transfers.add(
        amount_fen=1_000_000, to_account=ONWARD, transaction_reference="B-OUT-1"
    )
    onward.transfer_time.FromDatetime(clock.now() - timedelta(minutes=5))
    net.call("BANKB", ANSWER_ORDER, answer, order_pb2.Order)
    firsts["A"] = clock.now() - a_at
    with net.store(read_only=True) as uow:
        case_a = uow.cases.get(a.case_id)
        assert case_a is not None
        downstream = [o.order_id for o in case_a.orders if o.upstream_order_id == stop_b]
    assert len(downstream) == 1
    clock.advance(timedelta(minutes=2))
    net.call(
        "PAYX",
        ANSWER_ORDER,
        executed(downstream[0], clock.now(), amount_held_fen=1_000_000),
        order_pb2.Order,
    )
    clock.advance(timedelta(hours=2))
    freeze = issue(
        net,
        a.case_id,
        freeze=order_pb2.FreezeInstruction(
            account=MULE_B,
            amount_fen=4_000_000,
            filed_case_number="LA-2026-0001",
            approving_authority="Chaoyang PSB",
            term_months=6,
            stop_order_id=stop_b,
        ),
    )
    clock.advance(timedelta(minutes=5))
    net.call(
        "BANKB",
        ANSWER_ORDER,
        executed(freeze, clock.now(), amount_held_fen=4_000_000),
        order_pb2.Order,
    )

    # March 3: case B (no match), case C (held in full), a repeat stop in case A.
    clock.set(DAY[1] + timedelta(hours=10))
    b = net.call(
        "BANKB", CREATE_REPORT, report_of("BANKB", MULE_A, 2_000_000, clock.now()), case_pb2.Case
    )
    clock.advance(timedelta(minutes=1))
    b = net.call("BANKB", VERIFY_REPORT, confirm(b.case_id), case_pb2.Case)
    clock.advance(timedelta(minutes=1))
    no_match = order_pb2.ExecutionResult(
        order_id=b.orders[0].order_id,
        status=order_pb2.EXECUTION_STATUS_NO_MATCH,
        reason_code="NMAT",
        reason="holder name differs",
    )
    net.call("BANKA", ANSWER_ORDER, no_match, order_pb2.Order)
    clock.advance(timedelta(minutes=30))
    c = net.call(
        "BANKA", CREATE_REPORT, report_of("BANKA", MULE_B2, 1_000_000, clock.now()), case_pb2.Case
    )
    c_at = clock.now()
    clock.advance(timedelta(minutes=2))
    c = net.call("BANKA", VERIFY_REPORT, confirm(c.case_id), case_pb2.Case)
    clock.advance(timedelta(minutes=10))
    net.call(
        "BANKB",
        ANSWER_ORDER,
        executed(c.orders[0].order_id, clock.now(), amount_held_fen=1_000_000),
        order_pb2.Order,
    )
    firsts["C"] = clock.now() - c_at

    # March 4: the return.
    clock.set(DAY[2] + timedelta(hours=11))
    back = issue(
        net,
        a.case_id,
        fund_return=order_pb2.ReturnInstruction(
            freeze_order_id=freeze, beneficiary=PAYERS["BANKA"], amount_fen=3_000_000
        ),
    )
    clock.advance(timedelta(hours=1))
    net.call(
        "BANKB",
        ANSWER_ORDER,
        executed(back, clock.now(), amount_returned_fen=3_000_000),
        order_pb2.Order,
    )
    return firsts


def build_leads(net: Net) -> dict[str, str]:
    """The leads, beside the cases of `build` (whose case A a listing names as its source):
    - March 2: BANKA hands over L1 (MULE_B), the centre asks for more; BANKB hands over L2
      (MULE_A), which the centre lists.
    - March 3: BANKA answers about L1 and hands over L3 (MULE_B2), left waiting.
    - March 4: the centre dismisses L1; BANKB hands over L4, which the centre asks more of;
      BANKA hands over L5 (MULE_B2), which the centre accepts by warning BANKB of it.
    Returns the leads' names."""
    net.hub.list_key = ListKey.generate()
    clock = net.clock

    def submit(code: str, account: Any) -> str:
        body = lead_pb2.SubmitLeadBody(
            accounts=[account], grade=grade_pb2.GRADE_YELLOW, grounds="fast in, fast out"
        )
        return str(net.call(code, ld.SUBMIT_LEAD, body, lead_pb2.Lead).name)

    def triage(name: str, **action: Any) -> None:
        net.call(
            "CENTRE", ld.TRIAGE_LEAD, lead_pb2.TriageLeadBody(name=name, **action), lead_pb2.Lead
        )

    with net.store(read_only=True) as uow:
        (case_a,) = [c for c, _ in uow.cases.search(CaseQuery(reporter="BANKA"), 10, None)][-1:]
    names = {}
    clock.set(DAY[0] + timedelta(hours=15))
    names["L1"] = submit("BANKA", MULE_B)
    clock.advance(timedelta(minutes=10))
    triage(names["L1"], ask_for_more=lead_pb2.AskForMore(question="since when?"))
    clock.advance(timedelta(hours=1))
    names["L2"] = submit("BANKB", MULE_A)
    clock.advance(timedelta(minutes=30))
    triage(
        names["L2"],
        list_account=lead_pb2.ListLeadAccount(
            account=MULE_A,
            basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
            source_case_id=case_a.case_id,
        ),
    )
    clock.set(DAY[1] + timedelta(hours=15))
    body = lead_pb2.AddLeadInformationBody(name=names["L1"], answer="since May")
    net.call("BANKA", ld.ADD_LEAD_INFORMATION, body, lead_pb2.Lead)
    names["L3"] = submit("BANKA", MULE_B2)
    clock.set(DAY[2] + timedelta(hours=15))
    triage(names["L1"], dismiss=lead_pb2.DismissLead(reason="a salary account"))
    names["L4"] = submit("BANKB", MULE_B2)
    clock.advance(timedelta(minutes=5))
    triage(names["L4"], ask_for_more=lead_pb2.AskForMore(question="who?"))
    clock.advance(timedelta(minutes=5))
    names["L5"] = submit("BANKA", MULE_B2)
    clock.advance(timedelta(minutes=5))
    triage(
        names["L5"],
        warn_member=lead_pb2.WarnFromLead(
            account=MULE_B2, amount_at_risk_fen=L5_AT_RISK_FEN, note="paying a fake broker"
        ),
    )
    return names


def run_csv(database_url: str, start: str, end: str, *args: str) -> dict[tuple[str, str, str], str]:
    """(institution, day of the period's start or "whole", figure) -> value, from the CLI's
    CSV for --from `start` --to `end` (both days included)."""
    result = CliRunner().invoke(
        report_cli,
        ["outcomes", "--db", database_url, "--format", "csv", "--from", start, "--to", end, *args],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert rows and set(rows[0]) == {"institution", "period_start", "period_end", "figure", "value"}
    whole = (
        f"{start}T00:00:00+00:00",
        f"{date.fromisoformat(end) + timedelta(days=1)}T00:00:00+00:00",
    )
    out = {}
    for r in rows:
        when = "whole" if (r["period_start"], r["period_end"]) == whole else r["period_start"][:10]
        out[(r["institution"], when, r["figure"])] = r["value"]
    return out


# ---- the independent recomputation ----------------------------------------------------------


def from_audit_log(
    net: Net, start: datetime, end: datetime, split: bool
) -> dict[tuple[str, str], dict[str, str]]:
    """(institution or ALL, day or "whole") -> figure -> value, computed from the audit log's
    signed envelopes alone: the reports members signed, the orders the hub sent to their
    addressees, and the answers the addressees signed."""
    reports: dict[str, tuple[str, datetime, int]] = {}
    order_of: dict[str, Any] = {}
    answers: list[tuple[datetime, Any]] = []
    # Leads: (name) -> (submitter, received), and every later step (at, name, what).
    submitted: dict[str, tuple[str, datetime]] = {}
    steps: list[tuple[datetime, str, str]] = []
    with net.store.read_engine.connect() as conn:
        for row in conn.execute(select(audit_log).order_by(audit_log.c.id)):
            if row.payload is None:
                continue
            env = envelope_pb2.Envelope.FromString(row.payload)
            if row.kind == "received" and env.body_type == "stophub.v1.Report":
                body = case_pb2.Report.FromString(env.body)
                reports[row.case_id] = (
                    env.sender,
                    row.recorded_at,
                    sum(t.amount_fen for t in body.transactions),
                )
            elif row.kind == "received" and env.body_type == "stophub.v1.ExecutionResult":
                answers.append((row.recorded_at, order_pb2.ExecutionResult.FromString(env.body)))
            elif row.kind == "received" and env.body_type == "stophub.v1.SubmitLeadBody":
                submitted[row.case_id] = (env.sender, row.recorded_at)
            elif row.kind == "received" and env.body_type == "stophub.v1.TriageLeadBody":
                triage = lead_pb2.TriageLeadBody.FromString(env.body)
                what = str(triage.WhichOneof("action"))
                steps.append((row.recorded_at, triage.name, what))
            elif row.kind == "received" and env.body_type == "stophub.v1.AddLeadInformationBody":
                answer_body = lead_pb2.AddLeadInformationBody.FromString(env.body)
                steps.append((row.recorded_at, answer_body.name, "answered"))
            elif row.kind == "sent" and env.body_type == "stophub.v1.Notice":
                notice = delivery_pb2.Notice.FromString(env.body)
                if notice.HasField("order") and env.recipient == notice.order.addressed_to:
                    order_of.setdefault(notice.order.order_id, notice.order)

    events: list[tuple[str, datetime, str, float]] = []  # institution, at, figure, value
    for inst, at, lost in reports.values():
        events += [(inst, at, "reports", 1), (inst, at, "lost_fen", lost)]
    done = (order_pb2.EXECUTION_STATUS_EXECUTED, order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED)
    held_accounts: dict[str, set[tuple[str, str]]] = defaultdict(set)
    first_stop_seen: set[str] = set()
    for at, answer in sorted(answers, key=lambda a: (a[0], a[1].order_id)):
        if answer.status not in done:
            continue
        order = order_of[answer.order_id]
        inst = reports[order.case_id][0]
        which = order.instruction.WhichOneof("instruction")
        if which == "stop" and answer.amount_held_fen > 0:
            account = order.instruction.stop.account
            key = (account.institution_code, account.account_number)
            if order.case_id not in first_stop_seen:
                first_stop_seen.add(order.case_id)
                seconds = (at - reports[order.case_id][1]).total_seconds()
                events.append((inst, at, "to_first_stop", seconds))
            if key in held_accounts[order.case_id]:
                continue
            held_accounts[order.case_id].add(key)
            layer = "downstream" if order.instruction.stop.upstream_order_id else "first_layer"
            events += [
                (inst, at, f"{layer}_stops", 1),
                (inst, at, f"stopped_{layer}_fen", answer.amount_held_fen),
            ]
        elif which == "freeze" and answer.amount_held_fen > 0:
            if not order.instruction.freeze.renews_order_id:
                events += [
                    (inst, at, "freezes", 1),
                    (inst, at, "frozen_fen", answer.amount_held_fen),
                ]
        elif which == "fund_return" and answer.amount_returned_fen > 0:
            beneficiary = order.instruction.fund_return.beneficiary_case_id or order.case_id
            inst = reports[beneficiary][0]
            events += [
                (inst, at, "returns", 1),
                (inst, at, "returned_fen", answer.amount_returned_fen),
            ]

    # Each lead's fate as of the range's end: its last step before it.
    fate_figure = {
        "open_case": "leads_opened_case",
        "list_account": "leads_listed",
        "warn_member": "leads_warned",
        "ask_for_more": "leads_asked_for_more",
        "dismiss": "leads_dismissed",
        "answered": "leads_pending",
    }
    for name, (inst, at) in submitted.items():
        before = [what for when, lead, what in sorted(steps) if lead == name and when < end]
        fate = fate_figure[before[-1]] if before else "leads_pending"
        events += [(inst, at, "leads", 1), (inst, at, fate, 1)]

    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for inst, at, figure, value in events:
        if not start <= at < end:
            continue
        keys = [(inst, "whole"), ("ALL", "whole")]
        if split:
            keys += [(inst, at.date().isoformat()), ("ALL", at.date().isoformat())]
        for key in keys:
            if figure == "to_first_stop":
                durations[key].append(value)
            else:
                groups[key][figure] += value
    out: dict[tuple[str, str], dict[str, str]] = {}
    for key in set(groups) | set(durations):
        g, d = groups[key], sorted(durations[key])
        values = {
            name: str(int(g[name]))
            for name in FIGURES
            if name.endswith(("s", "_fen")) or name.startswith("leads")
        }
        values["recovered_share"] = (
            f"{g['returned_fen'] / g['lost_fen']:.6f}" if g["lost_fen"] else ""
        )
        values["first_stops"] = str(len(d))
        if d:
            p90 = d[0] if len(d) == 1 else statistics.quantiles(d, n=10, method="inclusive")[8]
            values["first_stop_median_seconds"] = f"{statistics.median(d):.3f}"
            values["first_stop_p90_seconds"] = f"{p90:.3f}"
        else:
            values["first_stop_median_seconds"] = values["first_stop_p90_seconds"] = ""
        out[key] = values
    return out


def test_outcome_figures(net: Net, database_url: str) -> None:
    firsts = build(net)
    build_leads(net)
    a_first = firsts["A"].total_seconds()
    c_first = firsts["C"].total_seconds()

    # By hand.
    got = run_csv(database_url, "2026-03-02", "2026-03-04", "--period", "day")
    # The one warning, L5's, sent to BANKB on March 4 and not yet acknowledged.
    sent = {("BANKB", "2026-03-04"), ("BANKB", "whole"), ("ALL", "2026-03-04"), ("ALL", "whole")}
    expected_warnings = {
        (*row, name): (
            {"warnings_sent": "1", "at_risk_fen": str(L5_AT_RISK_FEN)}.get(name, "0")
            if tuple(row) in sent
            else "0"
        )
        for (*row, name) in got
        if name in WARNING_FIGURES
    }
    assert {k: got[k] for k in expected_warnings} == expected_warnings
    banka = {
        name: got[("BANKA", "whole", name)] for name in FIGURES if not name.startswith("leads")
    }
    assert banka == {
        "reports": "2",
        "lost_fen": "6000000",
        "first_layer_stops": "2",
        "stopped_first_layer_fen": "5000000",
        "downstream_stops": "1",
        "stopped_downstream_fen": "1000000",
        "freezes": "1",
        "frozen_fen": "4000000",
        "returns": "1",
        "returned_fen": "3000000",
        "recovered_share": "0.500000",
        "first_stops": "2",
        "first_stop_median_seconds": f"{(a_first + c_first) / 2:.3f}",
        "first_stop_p90_seconds": f"{a_first + 0.9 * (c_first - a_first):.3f}",
    }
    assert got[("BANKB", "whole", "reports")] == "1"
    assert got[("BANKB", "whole", "lost_fen")] == "2000000"
    assert got[("BANKB", "whole", "first_stops")] == "0"
    assert got[("BANKB", "whole", "recovered_share")] == "0.000000"
    # Split by day: case A's money on March 2, case C's on March 3, the return on March 4.
    assert got[("BANKA", "2026-03-02", "stopped_first_layer_fen")] == "4000000"
    assert got[("BANKA", "2026-03-02", "stopped_downstream_fen")] == "1000000"
    assert got[("BANKA", "2026-03-03", "stopped_first_layer_fen")] == "1000000"
    assert got[("BANKA", "2026-03-03", "reports")] == "1"
    assert got[("BANKA", "2026-03-04", "returned_fen")] == "3000000"
    assert got[("BANKA", "2026-03-04", "recovered_share")] == ""  # nothing reported that day
    assert got[("ALL", "whole", "reports")] == "3"
    assert got[("ALL", "whole", "lost_fen")] == "8000000"
    # Leads, by hand: their fate as of the end of March 4.
    leads_of = {
        inst: {name: got[(inst, "whole", name)] for name in FIGURES if name.startswith("leads")}
        for inst in ("BANKA", "BANKB")
    }
    assert leads_of["BANKA"] == {
        "leads": "3",
        "leads_opened_case": "0",
        "leads_listed": "0",
        "leads_warned": "1",
        "leads_asked_for_more": "0",
        "leads_dismissed": "1",
        "leads_pending": "1",
    }
    assert leads_of["BANKB"]["leads"] == "2"
    assert leads_of["BANKB"]["leads_listed"] == leads_of["BANKB"]["leads_asked_for_more"] == "1"
    assert got[("BANKA", "2026-03-02", "leads")] == "1"
    assert got[("BANKA", "2026-03-03", "leads_pending")] == "1"
    assert got[("BANKA", "2026-03-04", "leads_warned")] == "1"

    # Every figure equals the audit log's.
    expected = from_audit_log(net, DAY[0], DAY[3], split=True)
    assert expected[("BANKA", "2026-03-02")]["stopped_downstream_fen"] == "1000000"
    # L5's signed triage (warn_member) is what the log counts as a lead warned.
    assert expected[("BANKA", "2026-03-04")]["leads_warned"] == "1"
    for (inst, when), values in expected.items():
        for name in FIGURES:
            assert got[(inst, when, name)] == values[name], (inst, when, name)
    figures_of = {(inst, when) for inst, when, _ in got}
    # Days without any record have rows of zeros, which the log has no event for.
    assert set(expected) <= figures_of
    for inst, when in figures_of - set(expected):
        assert got[(inst, when, "reports")] == "0" and got[(inst, when, "returned_fen")] == "0"

    # --institution: BANKB's figures alone, equal to its rows above.
    only_b = run_csv(database_url, "2026-03-02", "2026-03-04", "--institution", "BANKB")
    assert {k[0] for k in only_b} == {"BANKB", "ALL"}
    for name in FIGURES:
        assert only_b[("BANKB", "whole", name)] == got[("BANKB", "whole", name)]
        assert only_b[("ALL", "whole", name)] == got[("BANKB", "whole", name)]

    # A range that ends before the return (March 2 and 3): the return is not counted.
    early = run_csv(database_url, "2026-03-02", "2026-03-03")
    assert early[("BANKA", "whole", "returned_fen")] == "0"
    # L1 was answered on March 3 and dismissed only on March 4: pending at the end of March 3.
    assert early[("BANKA", "whole", "leads_pending")] == "2"
    assert early[("BANKA", "whole", "leads_dismissed")] == "0"
    assert early[("BANKA", "whole", "reports")] == "2"
    recomputed = from_audit_log(net, DAY[0], DAY[2], split=False)
    for name in FIGURES:
        assert early[("BANKA", "whole", name)] == recomputed[("BANKA", "whole")][name]


def test_the_page_draws_the_figures_and_bad_dates_are_one_line(
    net: Net, database_url: str, tmp_path: Path
) -> None:
    build(net)
    out = tmp_path / "outcomes.html"
    args = ["outcomes", "--db", database_url, "--from", "2026-03-02", "--to", "2026-03-04"]
    result = CliRunner().invoke(report_cli, [*args, "--period", "day", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.startswith(f"wrote {out}: ")
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html and "https://" not in html
    root = ET.fromstring(html.removeprefix("<!DOCTYPE html>"))  # well-formed as XML
    charts = {svg.get("id"): svg for svg in root.iter("svg")}
    # No warnings here: their chart shows none (test_outcomes_warnings.py draws some).
    assert set(charts) == {"money-over-time", "money-per-institution", "warnings-over-time"}
    # Per day: March 2 has lost, first-layer, downstream and frozen bars; March 4 the return.
    bars = [
        (rect.get("data-figure"), float(rect.get("height") or 0))
        for rect in charts["money-over-time"].iter("rect")
        if rect.get("data-figure")
    ]
    assert {name for name, _ in bars} == {
        "lost_fen",
        "stopped_first_layer_fen",
        "stopped_downstream_fen",
        "frozen_fen",
        "returned_fen",
    }
    assert all(height > 0 for _, height in bars)
    per_inst = [r.get("data-figure") for r in charts["money-per-institution"].iter("rect")]
    assert per_inst.count("lost_fen") == 2, "BANKA and BANKB reported money lost"
    # The table's cells are the CSV's figures.
    got = run_csv(database_url, "2026-03-02", "2026-03-04", "--period", "day")
    table = next(t for t in root.iter("table") if t.get("id") == "figures-table")
    rows = [tr for tr in table.iter("tr") if tr.find("td") is not None]
    assert len(rows) == len({(i, w) for i, w, _ in got})
    whole_banka = next(
        tr for tr in rows if [td.text for td in tr.findall("td")[:2]] == ["BANKA", "whole range"]
    )
    cells = {td.get("data-figure"): td for td in whole_banka.findall("td")}
    for name in ("lost_fen", "stopped_first_layer_fen", "frozen_fen", "returned_fen"):
        assert cells[name].get("data-fen") == got[("BANKA", "whole", name)]
    assert cells["recovered_share"].text == "50.0%"

    # Bad dates: one line, exit 2, through the `stophub` command itself.
    for bad in (
        ["--from", "2026-02-30", "--to", "2026-03-04"],
        ["--from", "2026-03-04", "--to", "2026-03-01"],
        ["--from", "2020-01-01", "--to", "2026-03-01"],
    ):
        result = CliRunner().invoke(main, ["report", "outcomes", "--db", database_url, *bad])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: Invalid value for --"), lines
