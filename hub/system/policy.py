"""Load the policy file (TOML), refusing a bad file with the line at fault: the case clocks
(`[clocks.NAME]`), the official holiday calendar (`[calendar.YEAR]`, read before the
chinesecalendar package's), the time zone the `stophub` commands show times in
(`[display]`) and the signature algorithms members may use (`[signing]`). The file's
header says how each is written; docs/operations.md too."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from hub.domain.clocks import (
    TRIGGERS,
    WARNING_TRIGGERS,
    ClockPolicy,
    Policy,
    PolicyError,
    Responsible,
    StepKind,
    parse_step,
    parse_window,
)
from hub.domain.institutions import AlgorithmPolicy
from hub.domain.workdays import Arrangement
from hub.system.calendar import ChineseWorkingDays

DEFAULT_POLICY = Path(__file__).with_name("policy.toml")
KEYS = {"starts", "stops", "window", "responsible", "ladder"}
SECTIONS = "[clocks.NAME], [calendar.YEAR], [display] and [signing]"
# The envelope algorithms a policy may name (hub/crypto/signing.py's registry; system/ does not
# import crypto/, and tests/unit/test_sm2.py holds the two equal).
SIGNATURE_ALGORITHMS = ("ecdsa-p256-sha256", "ed25519", "sm2-sm3")
SIGNING_KEYS = {"allowed_algorithms", "institutions"}
# Optional keys of a [clocks.NAME] table.
OPTIONAL_KEYS = {"grade_windows"}
GRADES = ("red", "yellow", "green")
CALENDAR_KEYS = {"notice", "days_off", "working_days"}
DISPLAY_KEYS = {"time_zone"}
# The zone the commands show times in when the file has no [display]: the hub's users, and
# the working days its deadlines end on, are in China.
DEFAULT_DISPLAY_ZONE = "Asia/Shanghai"
_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\s+to\s+(\d{4}-\d{2}-\d{2}))?$")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class PolicyFile:
    """Everything a policy file says."""

    clocks: Policy
    calendar: tuple[Arrangement, ...]
    display_zone: tzinfo
    signing: AlgorithmPolicy = field(default_factory=AlgorithmPolicy)


def _uncommented(line: str) -> str:
    """`line` without its comment (a # outside quotes)."""
    quote = ""
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif quote:
            if ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _line_of(text: str, table: str, key: str | None) -> int:
    """Where `key` of `[table]` is written (tomllib gives positions only for syntax errors)."""
    name = re.escape(table).replace(r"\.", r"\s*\.\s*")
    # A table's own header, or for a section only, the first of its sub-tables.
    header = re.compile(r"^\s*\[\s*" + name + (r"\s*[\].]" if key is None else r"\s*\]"))
    in_table = False
    table_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            in_table, table_line = True, number
            if key is None:
                return number
            continue
        if in_table and re.match(r"^\s*\[", line):
            break
        if in_table and key is not None and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    if not table_line and key is None:
        # A section written as a key of the file's top (`display = "UTC"`).
        for number, line in enumerate(text.splitlines(), start=1):
            if re.match(r"^\s*\[", line):
                break
            if re.match(rf"^\s*{re.escape(table)}\s*=", line):
                return number
    return table_line or 1


def _value_lines(text: str, table: str, key: str) -> Iterator[tuple[int, str]]:
    """The lines that hold the value of `key` in `[table]` (an array may span several), each
    without its comment."""
    lines = text.splitlines()
    start = _line_of(text, table, key)
    for number in range(start, len(lines) + 1):
        line = lines[number - 1]
        if number > start and re.match(r"^\s*(\[|[A-Za-z0-9_\-\"']+\s*=)", line):
            return
        yield number, _uncommented(line) if number > start else _uncommented(line).split("=", 1)[1]


def load_policy(path: str | Path | None = None) -> Policy:
    """The case clocks of the policy file (the shipped one unless `path`); the whole file is
    checked."""
    return read_policy(path).clocks


def load_calendar(path: str | Path | None = None) -> ChineseWorkingDays:
    """The working days: the policy file's official years before the chinesecalendar
    package's."""
    return ChineseWorkingDays(read_policy(path).calendar)


def display_zone(policy_file: str | Path | None = None) -> tzinfo:
    """The time zone the `stophub` commands show times in by default: the policy file's
    `[display] time_zone`, Asia/Shanghai when it has none."""
    return read_policy(policy_file).display_zone


def read_policy(path: str | Path | None = None) -> PolicyFile:
    source = Path(path) if path is not None else DEFAULT_POLICY
    text = source.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: {exc}") from exc
    return parse_policy_file(data, text, str(source))


def parse_policy(data: dict[str, Any], text: str, name: str) -> Policy:
    return parse_policy_file(data, text, name).clocks


Fail = Callable[[str, str | None, str], PolicyError]


def parse_policy_file(data: dict[str, Any], text: str, name: str) -> PolicyFile:
    def fail(table: str, key: str | None, message: str) -> PolicyError:
        return PolicyError(f"{name}, line {_line_of(text, table, key)}: {message}")

    for section in sorted(set(data) - {"clocks", "calendar", "display", "signing"}):
        raise fail(section, None, f"unknown section [{section}]; sections are {SECTIONS}")
    clocks = _clocks(data, name, fail)
    calendar = _calendar(data.get("calendar", {}), text, name, fail)
    zone = _display(data.get("display", {}), fail)
    return PolicyFile(clocks, calendar, zone, _signing(data.get("signing", {}), fail))


def _algorithms(value: Any, table: str, key: str, fail: Fail) -> frozenset[str]:
    known = ", ".join(SIGNATURE_ALGORITHMS)
    if not isinstance(value, list) or not value:
        raise fail(table, key, f"{key} is a non-empty list of algorithms: {known}")
    for algorithm in value:
        if algorithm not in SIGNATURE_ALGORITHMS:
            raise fail(table, key, f"{algorithm!r} is not a signature algorithm; one of {known}")
    return frozenset(value)


def _signing(spec: Any, fail: Fail) -> AlgorithmPolicy:
    if not isinstance(spec, dict):
        raise fail("signing", None, "[signing] is a table")
    for key in sorted(set(spec) - SIGNING_KEYS):
        raise fail(
            "signing", key, f"unknown key {key!r}; keys are {', '.join(sorted(SIGNING_KEYS))}"
        )
    allowed = None
    if "allowed_algorithms" in spec:
        allowed = _algorithms(spec["allowed_algorithms"], "signing", "allowed_algorithms", fail)
    members = spec.get("institutions", {})
    if not isinstance(members, dict):
        raise fail("signing", "institutions", "[signing.institutions] is a table: CODE = [...]")
    by_code = tuple(
        (code, _algorithms(algs, "signing.institutions", code, fail))
        for code, algs in sorted(members.items())
    )
    return AlgorithmPolicy(allowed, by_code)


def _clocks(data: dict[str, Any], name: str, fail: Fail) -> Policy:
    clocks_data = data.get("clocks")
    if not isinstance(clocks_data, dict) or not clocks_data:
        raise PolicyError(f"{name}: no [clocks.NAME] tables")
    clocks = []
    for clock_name, spec in clocks_data.items():
        table = f"clocks.{clock_name}"
        if not isinstance(spec, dict):
            raise fail("clocks", clock_name, f"clocks.{clock_name} must be a table")
        for key in set(spec) - KEYS - OPTIONAL_KEYS:
            raise fail(
                table,
                key,
                f"unknown key {key!r}; keys are {', '.join(sorted(KEYS | OPTIONAL_KEYS))}",
            )
        for key in sorted(KEYS - set(spec)):
            raise fail(table, None, f"[{table}] lacks {key!r}")
        starts = spec["starts"]
        if not isinstance(starts, str) or starts not in TRIGGERS:
            raise fail(table, "starts", f"{starts!r} is not a case event; see the file's header")
        stops = spec["stops"]
        if isinstance(stops, str):
            stops = [stops]
        if not isinstance(stops, list) or not stops:
            raise fail(table, "stops", "stops is a list of case events")
        for trigger in stops:
            if not isinstance(trigger, str) or trigger not in TRIGGERS:
                raise fail(table, "stops", f"{trigger!r} is not a case event")
        try:
            window = parse_window(str(spec["window"]))
        except ValueError as exc:
            raise fail(table, "window", str(exc)) from None
        try:
            responsible = Responsible(spec["responsible"])
        except ValueError:
            raise fail(
                table,
                "responsible",
                f"{spec['responsible']!r}: one of " + ", ".join(r.value for r in Responsible),
            ) from None
        ladder_spec = spec["ladder"]
        if not isinstance(ladder_spec, list):
            raise fail(table, "ladder", "ladder is a list of steps")
        try:
            ladder = tuple(parse_step(str(s)) for s in ladder_spec)
        except ValueError as exc:
            raise fail(table, "ladder", str(exc)) from None
        if (starts in WARNING_TRIGGERS) != all(t in WARNING_TRIGGERS for t in stops):
            raise fail(table, "stops", "a warning's clock starts and stops on warning events only")
        if starts in WARNING_TRIGGERS and responsible is not Responsible.ADDRESSEE:
            raise fail(table, "responsible", "a warning's clock is its addressee's")
        if window.unit == "term" and not starts.startswith("freeze."):
            raise fail(table, "window", "a 'term' window belongs to a freeze's clock")
        if any(s.kind is StepKind.EXPIRE for s in ladder) and not starts.startswith(
            ("stop.", "freeze.")
        ):
            raise fail(table, "ladder", "only a stop or freeze can expire")
        grade_windows = _grade_windows(spec.get("grade_windows", {}), table, window, fail)
        clocks.append(
            ClockPolicy(
                clock_name, starts, frozenset(stops), window, responsible, ladder, grade_windows
            )
        )
    return Policy(tuple(clocks))


def _grade_windows(spec: Any, table: str, window: Any, fail: Fail) -> tuple[tuple[str, Any], ...]:
    """`grade_windows = { red = "2 minutes", yellow = "4 minutes" }`: a grade's own window
    (docs/grades.md); grades it does not name run the clock's window."""
    if not isinstance(spec, dict):
        raise fail(table, "grade_windows", 'a table: grade_windows = { red = "2 minutes" }')
    out = []
    for grade, text in spec.items():
        if grade not in GRADES:
            raise fail(
                table, "grade_windows", f"unknown grade {grade!r}; one of {', '.join(GRADES)}"
            )
        try:
            parsed = parse_window(str(text))
        except ValueError as exc:
            raise fail(table, "grade_windows", f"{grade}: {exc}") from None
        if "term" in (parsed.unit, window.unit):
            raise fail(table, "grade_windows", "a 'term' window has no per-grade windows")
        out.append((grade, parsed))
    return tuple(sorted(out))


def _calendar(spec: Any, text: str, name: str, fail: Fail) -> tuple[Arrangement, ...]:
    if not isinstance(spec, dict):
        raise fail("calendar", None, "the calendar is [calendar.YEAR] tables: [calendar.2027]")
    keys = ", ".join(sorted(CALENDAR_KEYS))
    # Every day named so far, in any year's table: its list and its line.
    named: dict[date, tuple[str, int]] = {}
    arrangements = []
    for key, year_spec in spec.items():
        table = f"calendar.{key}"
        if not re.fullmatch(r"\d{4}", key):
            raise fail(
                table, None, f"[{table}]: name a calendar table by its year: [calendar.2027]"
            )
        if not isinstance(year_spec, dict):
            raise fail("calendar", key, f"[{table}] is a table of {keys}")
        for unknown in sorted(set(year_spec) - CALENDAR_KEYS):
            raise fail(table, unknown, f"unknown key {unknown!r}; keys are {keys}")
        for missing in sorted(CALENDAR_KEYS - set(year_spec)):
            hint = " (working_days = [] if the notice names none)" * (missing == "working_days")
            raise fail(table, None, f"[{table}] lacks {missing!r}{hint}")
        notice = year_spec["notice"]
        if not isinstance(notice, str) or not notice.strip():
            raise fail(table, "notice", "notice names the State Council notice of the dates")
        year = int(key)
        lists = {
            list_key: _named_days(year, table, list_key, year_spec[list_key], text, name, named)
            for list_key in ("days_off", "working_days")
        }
        if not lists["days_off"]:
            raise fail(table, "days_off", "days_off is empty: every notice gives days off")
        arrangements.append(
            Arrangement(year, notice.strip(), lists["days_off"], lists["working_days"])
        )
    return tuple(sorted(arrangements, key=lambda a: a.year))


def _named_days(
    year: int,
    table: str,
    list_key: str,
    entries: Any,
    text: str,
    name: str,
    named: dict[date, tuple[str, int]],
) -> frozenset[date]:
    """The days of one list of `[calendar.YEAR]`, each checked against its year, its kind
    and every day `named` before it; the error names the entry's line."""
    if not isinstance(entries, list):
        raise PolicyError(
            f"{name}, line {_line_of(text, table, list_key)}: {list_key} is a list of days "
            f'and ranges: ["{year}-02-06 to {year}-02-13", "{year}-02-20"]'
        )
    lines = list(_value_lines(text, table, list_key))
    seen: dict[str, int] = {}
    days: set[date] = set()
    for entry in entries:
        literal = entry.isoformat() if isinstance(entry, date) else str(entry)
        seen[literal] = seen.get(literal, 0) + 1
        line = _nth_line(lines, literal, seen[literal]) or _line_of(text, table, list_key)

        def at(message: str, line: int = line) -> PolicyError:
            return PolicyError(f"{name}, line {line}: {message}")

        for day in _days(entry, at):
            if not (day.year == year or (day.year == year - 1 and day.month == 12)):
                raise at(
                    f"{day} is not in {year}: [{table}] holds days of {year} (and of the "
                    "December before, when the notice names some)"
                )
            if list_key == "working_days" and day.weekday() < 5:
                raise at(
                    f"{day} is a {_WEEKDAYS[day.weekday()]}: a make-up working day is a "
                    "Saturday or Sunday"
                )
            if day in named:
                other, where = named[day]
                if other == list_key:
                    raise at(f"{day} is named twice (also on line {where})")
                raise at(f"{day} is both a day off and a working day (see line {where})")
            named[day] = (list_key, line)
            days.add(day)
    return frozenset(days)


def _nth_line(lines: list[tuple[int, str]], literal: str, n: int) -> int | None:
    """The line of the `n`-th `literal` among `lines`."""
    count = 0
    for number, line in lines:
        count += line.count(literal)
        if count >= n:
            return number
    return None


def _days(entry: Any, at: Callable[[str], PolicyError]) -> list[date]:
    """The days of one entry: a day ("2027-02-14", or a TOML date) or a range
    ("2027-02-06 to 2027-02-13", both ends included)."""
    if isinstance(entry, date) and not hasattr(entry, "hour"):
        return [entry]
    m = _DAY.match(entry.strip()) if isinstance(entry, str) else None
    if m is None:
        raise at(
            f'{entry!r}: write a day as "YYYY-MM-DD" and a range as "YYYY-MM-DD to YYYY-MM-DD"'
        )
    try:
        first = date.fromisoformat(m[1])
        last = date.fromisoformat(m[2]) if m[2] else first
    except ValueError as err:
        raise at(f"{entry!r}: {err}") from None
    if last < first:
        raise at(f"{entry!r}: the range ends before it begins")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _display(spec: Any, fail: Fail) -> tzinfo:
    if not isinstance(spec, dict):
        raise fail("display", None, '[display] is a table: time_zone = "Asia/Shanghai"')
    for unknown in sorted(set(spec) - DISPLAY_KEYS):
        raise fail(
            "display",
            unknown,
            f"unknown key {unknown!r}; keys are {', '.join(sorted(DISPLAY_KEYS))}",
        )
    zone = spec.get("time_zone", DEFAULT_DISPLAY_ZONE)
    if not isinstance(zone, str):
        raise fail(
            "display",
            "time_zone",
            'time_zone is an IANA time zone name, e.g. "Asia/Shanghai" or "UTC"',
        )
    if zone == "UTC":
        return UTC
    try:
        return ZoneInfo(zone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise fail(
            "display",
            "time_zone",
            f'{zone!r} is not an IANA time zone name; write one such as "Asia/Shanghai" or "UTC"',
        ) from None


def find_zone(name: str) -> tzinfo | None:
    """The zone an IANA name names, its letter case aside; None for no zone (or for a name no
    zone could have: over 64 characters, or with a control character)."""
    name = name.strip()
    if not name or len(name) > 64 or not name.isprintable():
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        pass
    folded = {z.lower(): z for z in available_timezones()}
    return ZoneInfo(folded[name.lower()]) if name.lower() in folded else None
