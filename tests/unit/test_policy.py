"""The clock policy file: the default loads, a bad file is refused naming the line at fault."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.domain.cases import Case
from hub.domain.clocks import (
    Policy,
    PolicyError,
    Responsible,
    Step,
    StepKind,
    Trigger,
    Window,
    apply_triggers,
    parse_step,
    parse_window,
)
from hub.domain.workdays import WeekdaysOnly
from hub.system.calendar import ChineseWorkingDays
from hub.system.policy import DEFAULT_POLICY, load_policy

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)

# ---- the default file ---------------------------------------------------------------------


def test_the_default_policy_has_the_clocks_of_the_design() -> None:
    policy = load_policy()
    assert isinstance(policy, Policy)
    assert [c.name for c in policy.clocks] == [
        "record",
        "verify",
        "stop_issue",
        "stop",
        "investigate",
        "stop_validity",
        "freeze_term",
        "fund_return",
        "release_unrelated",
        "public_notice",
        "appeal",
        "lead_triage",
        "warning_contact_red",
        "warning_contact_yellow",
        "warning_contact_green",
        "warning_contact_ungraded",
        "warning_outcome",
    ]
    assert load_policy(DEFAULT_POLICY) == policy

    def row(name: str) -> tuple[str, set[str], Window, Responsible]:
        cp = policy.clock(name)
        assert cp is not None
        return cp.starts, set(cp.stops), cp.window, cp.responsible

    # Issue 23: contact within 10 minutes for red, 30 for yellow; the outcome within 24 hours.
    contact = {"warning.acknowledged", "warning.outcome"}
    addressee = Responsible.ADDRESSEE
    assert row("warning_contact_red") == (
        "warning.sent.red",
        contact,
        Window(10, "minutes"),
        addressee,
    )
    assert row("warning_contact_yellow")[2] == Window(30, "minutes")
    assert row("warning_outcome") == (
        "warning.sent",
        {"warning.outcome"},
        Window(24, "hours"),
        addressee,
    )

    # The fund-return rules' 30-day public notice: a waiting period, so it ends, never breaches.
    assert row("public_notice") == (
        "distribution.noticed",
        {"distribution.withdrawn"},
        Window(30, "days"),
        Responsible.CENTRE,
    )
    notice = policy.clock("public_notice")
    assert notice is not None and [s.kind.value for s in notice.ladder] == ["notice_end"]

    # Each appeal has its own clock, keyed by the appeal; the centre decides within it.
    assert row("appeal") == (
        "appeal.filed",
        {"appeal.decided"},
        Window(5, "working_days"),
        Responsible.CENTRE,
    )

    assert row("record") == (
        "report.sent",
        {"report.received"},
        Window(1, "minutes"),
        Responsible.HUB,
    )
    assert row("verify") == (
        "report.received",
        {"report.verified", "report.rejected"},
        Window(5, "minutes"),
        Responsible.REPORTER,
    )
    assert row("stop_issue") == (
        "report.verified",
        {"stop.issued", "case.closed"},
        Window(10, "minutes"),
        Responsible.CENTRE,
    )
    assert row("stop") == (
        "stop.issued",
        {"stop.answered", "stop.ended"},
        Window(10, "minutes"),
        Responsible.ADDRESSEE,
    )
    assert row("investigate") == (
        "stop.effective",
        {"freeze.issued", "release.issued", "stop.ended"},
        Window(24, "hours"),
        Responsible.CENTRE,
    )
    assert row("stop_validity") == (
        "stop.effective",
        {"stop.ended"},
        Window(48, "hours"),
        Responsible.CENTRE,
    )
    assert row("freeze_term") == (
        "freeze.effective",
        {"freeze.ended"},
        Window(0, "term"),
        Responsible.CENTRE,
    )
    assert row("fund_return") == (
        "return.issued",
        {"return.answered", "return.ended"},
        Window(3, "working_days"),
        Responsible.ADDRESSEE,
    )
    assert row("release_unrelated") == (
        "release.issued",
        {"release.answered", "release.ended"},
        Window(3, "days"),
        Responsible.ADDRESSEE,
    )
    assert policy.clock("nonsense") is None


def test_the_default_ladders_remind_breach_escalate_renew_and_expire() -> None:
    policy = load_policy()
    ladder = {c.name: c.ladder for c in policy.clocks}
    escalation = (
        Step(StepKind.REMINDER, percent=80),
        Step(StepKind.BREACH, percent=100),
        Step(StepKind.REGULATOR, percent=200),
    )
    for name in ("verify", "stop_issue", "stop", "investigate", "fund_return"):
        assert ladder[name] == escalation, name
    assert ladder["release_unrelated"] == escalation
    assert ladder["record"] == (Step(StepKind.BREACH, percent=100),)
    assert ladder["stop_validity"] == (
        Step(StepKind.REMINDER, percent=80),
        Step(StepKind.EXPIRE, percent=100),
    )
    assert ladder["freeze_term"] == (
        Step(StepKind.RENEWAL_REMINDER, before_end=timedelta(days=7)),
        Step(StepKind.RENEWAL_REMINDER, before_end=timedelta(days=1)),
        Step(StepKind.EXPIRE, percent=100),
    )
    # Order scope follows the start trigger.
    scoped = {c.name: (c.order_scoped, c.order_kind) for c in policy.clocks}
    assert scoped["verify"] == (False, None)
    assert scoped["stop_validity"][0] is True
    assert str(scoped["freeze_term"][1]) == "freeze"
    assert str(scoped["fund_return"][1]) == "return"


# ---- bad files: refused, naming the line ----------------------------------------------------

GOOD = """\
# a two-clock policy
[clocks.verify]
starts = "report.received"
stops = ["report.verified", "report.rejected"]
window = "5 minutes"
responsible = "reporter"
ladder = ["reminder@80%", "breach@100%", "regulator@200%"]

[clocks.stop]
# the payee bank executes
starts = "stop.issued"
stops = ["stop.answered", "stop.ended"]
window = "10 minutes"
responsible = "addressee"
ladder = ["reminder@80%", "breach@100%", "regulator@200%"]
"""
# Line numbers in GOOD (1-based) of the second table, where the faults go, so a loader that
# named the first table's line (or the header) would be caught.
STOP_HEADER = 9
STOP_LINE = {"starts": 11, "stops": 12, "window": 13, "responsible": 14, "ladder": 15}


def test_the_line_numbers_of_the_fixture_are_right() -> None:
    lines = GOOD.splitlines()
    assert lines[STOP_HEADER - 1] == "[clocks.stop]"
    for key, number in STOP_LINE.items():
        assert lines[number - 1].startswith(f"{key} = "), key


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(tmp_path: Path, text: str, line: int, *words: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert str(path) in message
    numbers = [int(n) for n in re.findall(r"\bline (\d+)", message)]
    assert numbers == [line], message
    for word in words:
        assert word in message, message
    return message


def _replace_in_stop(key: str, new_line: str) -> str:
    lines = GOOD.splitlines()
    number = STOP_LINE[key]
    lines[number - 1] = new_line
    return "\n".join(lines) + "\n"


def test_the_fixture_itself_loads(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, GOOD))
    assert [c.name for c in policy.clocks] == ["verify", "stop"]


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    _refused(tmp_path, _replace_in_stop("responsible", "responsible = addressee"), 14)
    _refused(tmp_path, _replace_in_stop("window", 'window = "10 minutes'), 13)
    duplicate = GOOD + '\n[clocks.verify]\nstarts = "report.sent"\n'
    _refused(tmp_path, duplicate, len(GOOD.splitlines()) + 2)


def test_an_unknown_key_names_its_own_line(tmp_path: Path) -> None:
    text = _replace_in_stop("window", 'windw = "10 minutes"')
    _refused(tmp_path, text, STOP_LINE["window"], "windw")
    extra = GOOD.replace('responsible = "addressee"', 'responsible = "addressee"\nescalate = true')
    _refused(tmp_path, extra, STOP_LINE["responsible"] + 1, "escalate")


@pytest.mark.parametrize("key", sorted(STOP_LINE))
def test_a_missing_key_names_the_table_that_lacks_it(tmp_path: Path, key: str) -> None:
    lines = GOOD.splitlines()
    del lines[STOP_LINE[key] - 1]
    _refused(tmp_path, "\n".join(lines) + "\n", STOP_HEADER, repr(key), "clocks.stop")


def test_an_unknown_start_trigger_names_the_starts_line(tmp_path: Path) -> None:
    text = _replace_in_stop("starts", 'starts = "stop.sent"')
    _refused(tmp_path, text, STOP_LINE["starts"], "stop.sent")


@pytest.mark.parametrize(
    "stops",
    [
        '["stop.answered", "stop.executed"]',
        '"stop.executed"',
        '["report.verifed"]',
    ],
)
def test_an_unknown_stop_trigger_names_the_stops_line(tmp_path: Path, stops: str) -> None:
    text = _replace_in_stop("stops", f"stops = {stops}")
    _refused(tmp_path, text, STOP_LINE["stops"], "is not a case event")


def test_an_empty_stops_list_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, _replace_in_stop("stops", "stops = []"), STOP_LINE["stops"])


@pytest.mark.parametrize(
    "window",
    ['"10 fortnights"', '"ten minutes"', '"0 minutes"', '"-5 minutes"', '"10"', "10", '""'],
)
def test_a_bad_window_names_the_window_line(tmp_path: Path, window: str) -> None:
    text = _replace_in_stop("window", f"window = {window}")
    _refused(tmp_path, text, STOP_LINE["window"], "window")


def test_an_unknown_responsible_names_its_line(tmp_path: Path) -> None:
    text = _replace_in_stop("responsible", 'responsible = "payee_bank"')
    message = _refused(tmp_path, text, STOP_LINE["responsible"], "payee_bank")
    for value in ("hub", "reporter", "centre", "addressee"):
        assert value in message


@pytest.mark.parametrize(
    ("ladder", "word"),
    [
        ('["reminder@80", "breach@100%"]', "reminder@80"),
        ('["nag@80%"]', "unknown kind"),
        ('["breach@-3w"]', "breach@-3w"),
        ('["breach@100%", "reminder@ 80%"]', "reminder@ 80%"),
        ('"breach@100%"', "list of steps"),
    ],
)
def test_a_bad_ladder_step_names_the_ladder_line(tmp_path: Path, ladder: str, word: str) -> None:
    text = _replace_in_stop("ladder", f"ladder = {ladder}")
    _refused(tmp_path, text, STOP_LINE["ladder"], word)


def test_a_term_window_belongs_to_a_freeze_clock_only(tmp_path: Path) -> None:
    text = _replace_in_stop("window", 'window = "term"')
    _refused(tmp_path, text, STOP_LINE["window"], "term")
    freeze = GOOD.replace('starts = "stop.issued"', 'starts = "freeze.effective"').replace(
        'stops = ["stop.answered", "stop.ended"]', 'stops = ["freeze.ended"]'
    )
    ok = load_policy(_write(tmp_path, freeze.replace('"10 minutes"', '"term"')))
    cp = ok.clock("stop")
    assert cp is not None and cp.window == Window(0, "term")


def test_expire_belongs_to_a_stop_or_freeze_clock_only(tmp_path: Path) -> None:
    # The verify clock is a case clock: nothing of it can lapse.
    text = GOOD.replace(
        'ladder = ["reminder@80%", "breach@100%", "regulator@200%"]\n\n[clocks.stop]',
        'ladder = ["reminder@80%", "expire@100%"]\n\n[clocks.stop]',
    )
    assert text != GOOD
    assert GOOD.splitlines()[6].startswith("ladder = ")
    _refused(tmp_path, text, 7, "expire")
    # A release's clock is an order clock, but a release holds nothing that could lapse.
    release = GOOD.replace('starts = "stop.issued"', 'starts = "release.issued"')
    _refused(
        tmp_path,
        _replace_in_stop("ladder", 'ladder = ["expire@100%"]').replace(
            'starts = "stop.issued"', 'starts = "release.issued"'
        ),
        STOP_LINE["ladder"],
        "expire",
    )
    assert load_policy(_write(tmp_path, release))
    # A stop's clock may expire.
    ok = load_policy(_write(tmp_path, _replace_in_stop("ladder", 'ladder = ["expire@100%"]')))
    cp = ok.clock("stop")
    assert cp is not None and cp.ladder == (Step(StepKind.EXPIRE, percent=100),)


def test_a_file_without_clocks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"no \[clocks\.NAME\]"):
        load_policy(_write(tmp_path, "# nothing\n"))


def test_an_unknown_section_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("[clocks.stop]", "[clock.stop]")
    _refused(tmp_path, text, STOP_HEADER, "clock")


def test_a_start_that_is_not_text_is_refused_naming_the_line(tmp_path: Path) -> None:
    text = _replace_in_stop("starts", 'starts = ["stop.issued"]')
    _refused(tmp_path, text, STOP_LINE["starts"])


# ---- windows and steps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("30 seconds", Window(30, "seconds")),
        ("1 second", Window(1, "seconds")),
        ("1 minute", Window(1, "minutes")),
        ("5 minutes", Window(5, "minutes")),
        ("1 hour", Window(1, "hours")),
        ("24 hours", Window(24, "hours")),
        ("1 day", Window(1, "days")),
        ("3 days", Window(3, "days")),
        ("1 working day", Window(1, "working_days")),
        ("3 working days", Window(3, "working_days")),
        ("  48 hours ", Window(48, "hours")),
        ("term", Window(0, "term")),
    ],
)
def test_windows_parse(text: str, window: Window) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["", "5", "minutes", "5 min", "5 weeks", "0 days", "1.5 hours"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


def test_window_deadlines() -> None:
    calendar = WeekdaysOnly()
    assert Window(30, "seconds").deadline(T0, calendar, None) == T0 + timedelta(seconds=30)
    assert Window(5, "minutes").deadline(T0, calendar, None) == T0 + timedelta(minutes=5)
    assert Window(24, "hours").deadline(T0, calendar, None) == T0 + timedelta(hours=24)
    assert Window(3, "days").deadline(T0, calendar, None) == T0 + timedelta(days=3)
    # Friday 2026-02-13 in Beijing: the 14th is a make-up working day, then the Spring Festival
    # holiday until the 23rd; the third working day is Wednesday the 25th, ending at 24:00 +08.
    friday = datetime(2026, 2, 13, 2, 0, tzinfo=UTC)
    chinese = ChineseWorkingDays()
    assert Window(3, "working_days").deadline(friday, chinese, None) == datetime(
        2026, 2, 25, 16, 0, tzinfo=UTC
    )
    assert Window(3, "working_days").deadline(friday, calendar, None) == datetime(
        2026, 2, 18, 16, 0, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="term"):
        Window(0, "term").deadline(T0, calendar, None)
    assert str(Window(1, "minutes")) == "1 minute"
    assert str(Window(3, "working_days")) == "3 working days"
    assert str(Window(0, "term")) == "the order's term"


def test_steps_parse_as_percentages_or_before_the_end() -> None:
    assert parse_step("reminder@80%") == Step(StepKind.REMINDER, percent=80)
    assert parse_step("regulator@200%") == Step(StepKind.REGULATOR, percent=200)
    assert parse_step("renewal_reminder@-7d") == Step(
        StepKind.RENEWAL_REMINDER, before_end=timedelta(days=7)
    )
    assert parse_step("breach@-12h") == Step(StepKind.BREACH, before_end=timedelta(hours=12))
    assert parse_step(" expire@100% ") == Step(StepKind.EXPIRE, percent=100)
    end = T0 + timedelta(hours=10)
    assert parse_step("reminder@80%").at(T0, end) == T0 + timedelta(hours=8)
    assert parse_step("regulator@200%").at(T0, end) == T0 + timedelta(hours=20)
    assert parse_step("breach@-12h").at(T0, end) == end - timedelta(hours=12)
    assert parse_step("renewal_reminder@-7d").at(T0, end) == end - timedelta(days=7)


@pytest.mark.parametrize(
    "text", ["reminder", "reminder@", "reminder@80", "reminder@+7d", "reminder@-7w", "nag@80%"]
)
def test_bad_steps_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="step"):
        parse_step(text)


def test_a_step_prints_as_written() -> None:
    for text in ("reminder@80%", "renewal_reminder@-7d", "breach@-12h"):
        assert str(parse_step(text)) == text


# ---- windows by grade (docs/grades.md) ----------------------------------------------------------


def test_grade_windows_shorten_a_clock_for_its_grade_only(tmp_path: Path) -> None:
    text = GOOD.replace(
        'window = "5 minutes"', 'window = "5 minutes"\ngrade_windows = { red = "2 minutes" }'
    )
    policy = load_policy(_write(tmp_path, text))
    verify = policy.clock("verify")
    assert verify is not None
    assert verify.window_for("red") == Window(2, "minutes")
    assert verify.window_for("yellow") == verify.window_for("") == Window(5, "minutes")
    # A case's clocks start in the window of its grade.
    red = _case("red")
    changes = apply_triggers(
        policy,
        red,
        [Trigger("report.received", T0)],
        [],
        new_id=lambda: "K1",
        calendar=WeekdaysOnly(),
        centres=["CENTRE"],
        hub_code="HUB",
    )
    [clock] = [c for c in changes.started if c.kind == "verify"]
    assert clock.deadline_at == T0 + timedelta(minutes=2)
    assert "(red)" in changes.log[0].detail
    plain = apply_triggers(
        policy,
        _case(""),
        [Trigger("report.received", T0)],
        [],
        new_id=lambda: "K2",
        calendar=WeekdaysOnly(),
        centres=["CENTRE"],
        hub_code="HUB",
    )
    assert [c.deadline_at for c in plain.started if c.kind == "verify"] == [
        T0 + timedelta(minutes=5)
    ]


@pytest.mark.parametrize(
    ("table", "word"),
    [
        ('{ purple = "2 minutes" }', "purple"),
        ('{ red = "soon" }', "soon"),
        ('"2 minutes"', "table"),
        ('{ red = "term" }', "term"),
    ],
)
def test_bad_grade_windows_name_their_line(tmp_path: Path, table: str, word: str) -> None:
    text = _replace_in_stop("window", f'window = "10 minutes"\ngrade_windows = {table}')
    _refused(tmp_path, text, STOP_LINE["window"] + 1, word)


def test_the_shipped_lead_clock_runs_by_grade() -> None:
    lead = load_policy().clock("lead_triage")
    assert lead is not None and lead.starts == "lead.submitted"
    assert lead.window_for("red") == Window(30, "minutes")
    assert lead.window_for("yellow") == Window(4, "hours")
    assert lead.window_for("green") == lead.window_for("") == Window(24, "hours")


def _case(grade: str) -> Case:
    case = Case(
        case_id="C20260302-00000001",
        reporting_institution="BANKA",
        created_at=T0,
        report_message_id="m1",
        victim_name="Zhang San",
        victim_id_number="",
        victim_phone="",
        fraud_type="other",
        description="",
        grade=grade,
    )
    case.record(T0, "report.received", "BANKA", "received", message_id="m1")
    return case


def test_a_warning_clock_runs_on_warning_events_only(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(
        '[clocks.w]\nstarts = "warning.sent"\nstops = ["case.closed"]\nwindow = "1 hour"\n'
        'responsible = "addressee"\nladder = ["breach@100%"]\n'
    )
    with pytest.raises(PolicyError, match="warning events only"):
        load_policy(mixed)
    centre = tmp_path / "centre.toml"
    centre.write_text(
        '[clocks.w]\nstarts = "warning.sent.red"\nstops = ["warning.outcome"]\n'
        'window = "1 hour"\nresponsible = "centre"\nladder = ["breach@100%"]\n'
    )
    with pytest.raises(PolicyError, match="addressee"):
        load_policy(centre)
