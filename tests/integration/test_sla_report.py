"""`stophub report sla` on a real database: the report's numbers are the SLA log's numbers,
and the report is what docs/sla-report.md promises.

Reports from BANKA and BANKB over three days, some verified in time and some late (with the
sweep firing reminders, breaches and escalations), one left open and one outside the period;
the report is written through the CLI and its figures are compared with figures computed here,
independently, from the `clocks` and `sla_log` rows. The report names the database and the
audit log's signed checkpoint it was made against, and carries a digest anyone can check with
`sha256sum` and `grep`.
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import statistics
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, update

from hub.cli import main
from hub.cli.report import report
from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import PrivateKey
from hub.service import auditlog, trust
from hub.service.admin import NewKey, Registry
from hub.service.commands.case import CREATE_REPORT, VERIFY_REPORT
from hub.service.commands.order import SET_AUTO_STOP_RULE
from hub.store.tables import audit_checkpoints, clocks, sla_log
from hub.system.policy import load_policy
from stophub.v1 import account_pb2, audit_pb2, case_pb2, envelope_pb2, order_pb2

from .test_audit_log import hub_pub
from .test_audit_tamper import Posing
from .test_hub_on_db import Net, confirm, rule

T_ENDORSED = datetime(2026, 3, 5, 9, tzinfo=UTC)

README = Path(__file__).resolve().parents[2] / "README.md"

ACCOUNTS = {
    "BANKA": account_pb2.AccountRef(
        institution_code="BANKA", account_number="6222010000000001", holder_name="Zhang San"
    ),
    "BANKB": account_pb2.AccountRef(
        institution_code="BANKB", account_number="6222020000000002", holder_name="Li Si"
    ),
}
NOTICES = {
    "reminders": {"reminder", "renewal_reminder"},
    "breach-notices": {"breach"},
    "escalations": {"regulator"},
}
# The report's names of the kinds this scenario starts (docs/sla-report.md, "Clock names").
NAMES = {
    "record": "report receipt",
    "verify": "verification",
    "stop_issue": "stop issue",
    "stop": "stop answer",
    "investigate": "investigation",
    "stop_validity": "stop validity",
}
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
    # The hub places the entries in the audit log's tree and signs a checkpoint of it.
    net.hub.keep_audit_log()
    return cases


def expected_figures(net: Net) -> tuple[dict[tuple[str, str], dict[str, Any]], Counter[Any]]:
    """Per (institution, clock), and per ("", clock) for the summary, from the rows; and
    breaches per (institution, day)."""
    with net.store.read_engine.connect() as conn:
        clock_rows = [r for r in conn.execute(select(clocks)) if START <= r.started_at < END]
        log_rows = list(conn.execute(select(sla_log)))
    ids = {r.clock_id for r in clock_rows}
    sent = {
        name: Counter(r.clock_id for r in log_rows if r.clock_id in ids and r.event in events)
        for name, events in NOTICES.items()
    }
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in clock_rows:
        groups[(r.responsible, r.kind)].append(r)
        groups[("", r.kind)].append(r)
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
        if key[0]:
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
            **{name: sum(counts[r.clock_id] for r in rows) for name, counts in sent.items()},
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
        for name in NOTICES:
            figures[name] = int(cells[name].text or "")
        for name in ("median", "p90"):
            figures[name] = cells[name].get("data-seconds") or None
        out[(tr.attrib["data-institution"], tr.attrib["data-clock"])] = figures
    return out


def summary_by_kind(root: ET.Element) -> dict[str, dict[str, str]]:
    """The summary at the top: per clock kind, each cell's text by its class."""
    table = root.find(".//table[@id='kinds']")
    assert table is not None
    return {
        tr.attrib["data-clock"]: {
            (td.get("class") or "").split()[-1]: td.get("data-seconds", td.text or "")
            if td.get("class") == "median"
            else td.text or ""
            for td in tr.iter("td")
        }
        for tr in table.iter("tr")
        if "data-clock" in tr.attrib
    }


def parse(html: str) -> ET.Element:
    return ET.fromstring(html.removeprefix("<!DOCTYPE html>"))  # well-formed as XML


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
    root = parse(html)

    expected, breaches = expected_figures(net)
    reported = reported_figures(root)
    assert reported == {k: v for k, v in expected.items() if k[0]}

    # The summary at the top: per clock kind, by its name, the count, the share met and the
    # median against the deadline.
    body = root.find("body")
    assert body is not None and next(h.text for h in body.iter("h2")) == "Summary"
    kinds = summary_by_kind(root)
    assert set(kinds) == {k for i, k in expected if not i}
    for kind, row in kinds.items():
        figures = expected[("", kind)]
        assert row["clock"] == NAMES[kind]
        assert int(row["count"]) == figures["count"]
        assert int(row["met"]) == figures["met"] and int(row["breached"]) == figures["breached"]
        judged = figures["met"] + figures["breached"]
        share = f"{100 * figures['met'] / judged:.0f}%" if judged else "—"
        assert row["share-met"] == share, kind
        assert (row["median"] or None) == figures["median"]
        assert "%" in row["median-ratio"] or figures["median"] is None
        for name in NOTICES:
            assert int(row[name]) == figures[name], (kind, name)
    assert kinds["verify"]["share-met"] == "50%"  # a_fast, b_fast, a_fast2 met; three breached

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
    # a_late: reminder, breach; a_open: reminder, breach, regulator; b_late: reminder, breach.
    assert (verify_a["reminders"], verify_a["breach-notices"], verify_a["escalations"]) == (
        2,
        2,
        1,
    )
    assert (verify_b["reminders"], verify_b["breach-notices"], verify_b["escalations"]) == (
        1,
        1,
        0,
    )
    assert verify_b["median"] == f"{(165 + 425) / 2:.3f}"
    assert ("HUB", "record") in expected and ("CENTRE", "stop_issue") in expected
    # The case outside the period is not counted.
    assert sum(f["count"] for k, f in expected.items() if k[0] and k[1] == "verify") == 6

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
        1 for (i, _), f in expected.items() if i and f["stopped"]
    )

    # The case timelines: the case's events and every clock step of its SLA log.
    with net.store.read_engine.connect() as conn:
        late_log = list(conn.execute(select(sla_log).where(sla_log.c.case_id == cases["a_late"])))
    section = root.find(f".//section[@data-case='{cases['a_late']}']")
    assert section is not None
    assert section.find(".//svg") is not None
    steps = [tr for tr in section.iter("tr") if "clock-step" in tr.get("class", "")]
    assert Counter((tr.attrib["data-clock-id"], tr.attrib["data-event"]) for tr in steps) == (
        Counter((r.clock_id, r.event) for r in late_log)
    )
    assert {"breach notice", "missed (stopped late)", "reminder"} <= {
        tr.findall("td")[2].text for tr in steps
    }
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
    definitions = root.find(".//p[@id='definitions']")
    assert definitions is not None and "90th percentile" in (definitions.text or "")
    for jargon in ("statistics", "quantiles", "Python", "method="):
        assert jargon not in html, jargon
    # Names, not identifiers, for the clock kinds, wherever the report writes one.
    for kind in ("stop_issue", "stop_validity", "fund_return", "freeze_term"):
        assert kind not in "".join(root.itertext()), kind


def test_report_states_its_database_checkpoint_and_digest(
    net: Net, tmp_path: Path, database_url: str
) -> None:
    build(net)
    out = tmp_path / "sla.html"
    result = CliRunner().invoke(
        report, ["sla", "--db", database_url, "--from", "2026-03-02", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    html = out.read_text(encoding="utf-8")
    root = parse(html)

    # The database, without its password.
    items = {
        tr.attrib["data-item"]: "".join(td.itertext())
        for tr in root.iter("tr")
        if "data-item" in tr.attrib
        for td in tr.iter("td")
    }
    host_part = database_url.split("@")[-1] if "@" in database_url else database_url[-20:]
    assert host_part in items["Database"]
    assert ":" not in database_url.split("//")[-1].split("@")[0] or "***" in items["Database"]

    # The latest signed checkpoint: its size, root and the hub's signature, as stored and as
    # the hub's key verifies it.
    with net.store.read_engine.connect() as conn:
        latest = conn.execute(
            select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc())
        ).first()
    assert latest is not None
    envelope = envelope_pb2.Envelope.FromString(latest.envelope)
    assert verify_envelope(envelope, net.hub_key.public_key)
    body = audit_pb2.LogCheckpoint.FromString(envelope.body)
    assert f"tree of {body.tree_size} entries" in items["Latest signed checkpoint"]
    assert items["Root hash (SHA-256)"] == body.root_hash.hex()
    assert envelope.key_id in items["Signed by"]
    assert items["Signature"] == envelope.signature.hex()
    cited = envelope_pb2.Envelope.FromString(
        base64.b64decode(items["Signed checkpoint (envelope, base64)"])
    )
    assert verify_envelope(cited, net.hub_key.public_key) and cited == envelope
    assert f"checkpoint of {body.tree_size} entries (root {body.root_hash.hex()})" in (
        result.output
    )

    # Its SHA-256, printed, beside it for `sha256sum -c`, and inside it without its own line.
    digest = re.search(r"SHA-256 ([0-9a-f]{64})", result.output)
    assert digest is not None
    sidecar = tmp_path / "sla.html.sha256"
    assert sidecar.read_text(encoding="utf-8") == f"{digest.group(1)}  sla.html\n"
    if shutil.which("sha256sum") is None or shutil.which("grep") is None:
        pytest.skip("sha256sum or grep missing")
    checked = subprocess.run(
        ["sha256sum", "-c", "sla.html.sha256"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0 and checked.stdout.strip() == "sla.html: OK", checked
    stated = re.search(r'id="content-sha256">[^<]*<code>([0-9a-f]{64})</code>', html)
    assert stated is not None
    content = subprocess.run(
        "grep -v 'id=\"content-sha256\"' sla.html | sha256sum",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert content.stdout.split()[0] == stated.group(1)
    # A changed report no longer matches either.
    out.write_text(html.replace("StopHub SLA report", "StopHub SLA rep0rt"), encoding="utf-8")
    assert subprocess.run(["sha256sum", "-c", "sla.html.sha256"], cwd=tmp_path,
                          capture_output=True).returncode != 0  # fmt: skip


def test_a_checkpoint_that_does_not_verify_stops_the_report(
    net: Net, tmp_path: Path, database_url: str
) -> None:
    build(net)
    with net.store.engine.begin() as conn:
        conn.execute(update(audit_checkpoints).values(root_hash=bytes(32)))
    out = tmp_path / "sla.html"
    result = CliRunner().invoke(report, ["sla", "--db", database_url, "--out", str(out)])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "does not verify" in line and "stophub audit verify" in line
    assert not out.exists()


def _signed_by_row(out: Path) -> str:
    root = parse(out.read_text(encoding="utf-8"))
    [row] = [tr for tr in root.iter("tr") if tr.attrib.get("data-item") == "Signed by"]
    return "".join(row.itertext())


def test_with_the_hubs_own_key_the_report_says_what_vouched_for_its_checkpoint(
    net: Net, tmp_path: Path, database_url: str
) -> None:
    build(net)
    out = tmp_path / "sla.html"
    given = ["--hub-key", hub_pub(net, tmp_path)]
    result = CliRunner().invoke(report, ["sla", "--db", database_url, "--out", str(out), *given])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.strip().splitlines()[-1].endswith("which --hub-key vouches for")
    assert "given to this report as the hub's own" in _signed_by_row(out)

    # Without the key, the report still rests on the registry's keys, and says so twice.
    result = CliRunner().invoke(report, ["sla", "--db", database_url, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "checked only against the hub keys the database's registry lists" in result.stderr
    assert "give --hub-key FILE" in result.stderr and "note:" not in result.stdout
    assert "no key was given to this report as the hub's own" in _signed_by_row(out)


def test_a_checkpoint_signed_by_a_key_the_database_holder_registered_fails_with_the_hubs_key(
    net: Net, tmp_path: Path, database_url: str
) -> None:
    # Whoever runs the database adds a key of their own to the registry as the hub's and
    # signs a checkpoint with it (over whatever log they like): the registry vouches for it.
    build(net)
    mallory = PrivateKey.generate()
    Registry(net.store, net.clock).add_key("HUB", NewKey(mallory.algorithm, mallory.public_key))
    with net.store.engine.begin() as conn:
        conn.execute(delete(audit_checkpoints))
    net.clock.advance(timedelta(minutes=1))
    assert auditlog.checkpoint(net.store, mallory, net.clock, every=None) is not None
    out = tmp_path / "sla.html"
    fooled = CliRunner().invoke(report, ["sla", "--db", database_url, "--out", str(out)])
    assert fooled.exit_code == 0, fooled.output
    assert fooled.stdout.strip().endswith(f"signed by the hub's key {mallory.key_id}")
    assert "checked only against the hub keys the database's registry lists" in fooled.stderr
    out.unlink()

    given = ["--hub-key", hub_pub(net, tmp_path)]
    result = CliRunner().invoke(report, ["sla", "--db", database_url, "--out", str(out), *given])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert "\n" not in line and "does not verify with the hub keys given (--hub-key)" in line
    assert "stophub audit verify" in line
    assert not out.exists()


def test_a_forged_endorsement_in_the_database_stops_a_report_given_the_hubs_key(
    net: Net, tmp_path: Path, database_url: str
) -> None:
    build(net)
    mallory = PrivateKey.generate()
    # An endorsement of Mallory's key that names the hub's key as its signer but is signed
    # by Mallory.
    row = trust.endorse(
        Posing(mallory, net.hub_key.key_id), mallory.algorithm, mallory.public_key, T_ENDORSED
    )
    with net.store() as uow:
        uow.audit.add_endorsement(row)
        uow.commit()
    out = tmp_path / "sla.html"
    given = ["--hub-key", hub_pub(net, tmp_path)]
    result = CliRunner().invoke(report, ["sla", "--db", database_url, "--out", str(out), *given])
    assert result.exit_code == 1, result.output
    assert f"the endorsement of hub key {mallory.key_id}" in result.output
    assert not out.exists()


def test_personal_data_only_when_asked_for(net: Net, tmp_path: Path, database_url: str) -> None:
    # A standing rule stops the payee at once: the stop's timeline entry names its holder.
    net.call("CENTRE", SET_AUTO_STOP_RULE, rule(), order_pb2.AutoStopRule)
    net.hub.clock_policy = load_policy()
    case_id = open_case(net, "BANKA")
    verify_after(net, "BANKA", case_id, timedelta(minutes=1))
    args = ["sla", "--db", database_url, "--case", case_id, "--out"]
    result = CliRunner().invoke(report, [*args, str(tmp_path / "masked.html")])
    assert result.exit_code == 0, result.output
    masked = (tmp_path / "masked.html").read_text(encoding="utf-8")
    assert "(L****) at BANKB" in masked
    assert "Zhang San" not in masked and "Li Si" not in masked
    result = CliRunner().invoke(report, [*args, str(tmp_path / "full.html"), "--personal-data"])
    assert result.exit_code == 0, result.output
    full = (tmp_path / "full.html").read_text(encoding="utf-8")
    assert "(Li Si) at BANKB" in full


def test_readme_report_examples_work_on_any_data(
    net: Net, tmp_path: Path, database_url: str
) -> None:
    """Every `stophub report sla` command README.md gives, run as written on this database,
    whose clocks started in March 2026: an example that names fixed dates reports nothing
    on the demo's database (its case time is the day it runs)."""
    cases = build(net)
    commands = [
        shlex.split(" ".join(m.split()))
        for m in re.findall(r"`((?:\.venv/bin/)?stophub [^`]*report sla[^`]*)`", README.read_text())
    ]
    assert commands, "README.md gives no `stophub report sla` command"
    for n, words in enumerate(commands):
        args = words[1:]
        # Where the README points at the demo's files, this test's database and keys.
        if "--data-keys" in args:
            del args[args.index("--data-keys") : args.index("--data-keys") + 2]
        if "--db" in args:
            args[args.index("--db") + 1] = database_url
        else:
            args += ["--db", database_url]
        out = tmp_path / f"example-{n}.html"
        args[args.index("--out") + 1] = str(out)
        args = [cases["a_late"] if a == "<CASE_ID>" else a for a in args]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (words, result.output)
        root = parse(out.read_text(encoding="utf-8"))
        assert root.find(".//table[@id='kinds']") is not None, (words, result.output)
        assert "no clock started" not in result.output


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
    # An empty period is a report that says so, and the command says so too, with the dates
    # the database's clocks started between.
    result = CliRunner().invoke(report, [*base, "--from", "2027-01-01", "--to", "2027-01-02"])
    assert result.exit_code == 0, result.output
    assert "no clock started from 2027-01-01T00:00:00Z to 2027-01-03T00:00:00Z" in result.output
    assert "this database holds no clock" in result.output
    root = parse(out.read_text(encoding="utf-8"))
    empty = root.find(".//p[@id='empty']")
    assert empty is not None and (empty.text or "").startswith("No clock started in this period.")
    assert root.find(".//svg[@id='durations-chart']") is None
    # Unwritable output: one line, no traceback.
    result = CliRunner().invoke(report, ["sla", "--db", database_url, "--out", "/nonexistent/x"])
    assert result.exit_code == 1 and "cannot write the report" in result.output
