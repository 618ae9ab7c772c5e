"""Load the clock policy from TOML, refusing a bad file with the line at fault."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from hub.domain.clocks import (
    TRIGGERS,
    ClockPolicy,
    Policy,
    PolicyError,
    Responsible,
    StepKind,
    parse_step,
    parse_window,
)

DEFAULT_POLICY = Path(__file__).with_name("policy.toml")
KEYS = {"starts", "stops", "window", "responsible", "ladder"}


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
    return table_line or 1


def load_policy(path: str | Path | None = None) -> Policy:
    source = Path(path) if path is not None else DEFAULT_POLICY
    text = source.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: {exc}") from exc
    return parse_policy(data, text, str(source))


def parse_policy(data: dict[str, Any], text: str, name: str) -> Policy:
    def fail(table: str, key: str | None, message: str) -> PolicyError:
        return PolicyError(f"{name}, line {_line_of(text, table, key)}: {message}")

    for section in sorted(set(data) - {"clocks"}):
        raise fail(section, None, f"unknown section [{section}]; clocks are [clocks.NAME]")
    clocks_data = data.get("clocks")
    if not isinstance(clocks_data, dict) or not clocks_data:
        raise PolicyError(f"{name}: no [clocks.NAME] tables")
    clocks = []
    for clock_name, spec in clocks_data.items():
        table = f"clocks.{clock_name}"
        if not isinstance(spec, dict):
            raise fail("clocks", clock_name, f"clocks.{clock_name} must be a table")
        for key in set(spec) - KEYS:
            raise fail(table, key, f"unknown key {key!r}; keys are {', '.join(sorted(KEYS))}")
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
        if window.unit == "term" and not starts.startswith("freeze."):
            raise fail(table, "window", "a 'term' window belongs to a freeze's clock")
        if any(s.kind is StepKind.EXPIRE for s in ladder) and not starts.startswith(
            ("stop.", "freeze.")
        ):
            raise fail(table, "ladder", "only a stop or freeze can expire")
        clocks.append(
            ClockPolicy(clock_name, starts, frozenset(stops), window, responsible, ladder)
        )
    return Policy(tuple(clocks))
