"""What the `stophub` commands share, without a database: --version, `keys generate`'s file
names, the display zone, failures as one line, and tables that never cut a word."""

from __future__ import annotations

import errno
import importlib.metadata
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner
from rich.table import Table
from sqlalchemy.exc import OperationalError

from hub.cli import main, one_line
from hub.cli.common import resolve_display_zone
from hub.crypto.public import public_key_from_pem
from hub.render.screen import fit, make_console, show
from hub.system.policy import display_zone


def test_version_is_the_installed_package_s() -> None:
    result = CliRunner().invoke(main, ["--version"], prog_name="stophub")
    assert result.exit_code == 0
    assert result.output == f"stophub {importlib.metadata.version('stophub')}\n"


def test_keys_generate_writes_the_public_key_its_help_names(tmp_path: Path) -> None:
    helped = CliRunner().invoke(main, ["keys", "generate", "--help"]).output
    assert "OUT.pub" not in helped
    assert "--out var/banka.key` writes var/banka.key and var/banka.pub" in " ".join(helped.split())
    made = CliRunner().invoke(main, ["keys", "generate", "--out", str(tmp_path / "keys/banka.key")])
    assert made.exit_code == 0, made.output
    assert f"public key  {tmp_path / 'keys/banka.pub'}" in made.output
    public_key_from_pem((tmp_path / "keys/banka.pub").read_bytes())
    bare = CliRunner().invoke(main, ["keys", "generate", "--out", str(tmp_path / "hub")])
    assert bare.exit_code == 0 and (tmp_path / "hub.pub").is_file()


def test_keys_generate_overwrites_nothing(tmp_path: Path) -> None:
    (tmp_path / "b.pub").write_text("someone's public key")
    taken = CliRunner().invoke(main, ["keys", "generate", "--out", str(tmp_path / "b.key")])
    assert taken.exit_code == 1 and "never overwritten" in taken.output
    assert not (tmp_path / "b.key").exists(), "no private key without its public one"
    assert (tmp_path / "b.pub").read_text() == "someone's public key"
    named_pub = CliRunner().invoke(main, ["keys", "generate", "--out", str(tmp_path / "c.pub")])
    assert named_pub.exit_code == 2 and "c.key" in named_pub.output
    assert not (tmp_path / "c.pub").exists()


def test_the_display_zone_flag_then_environment_then_default() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    assert resolve_display_zone(shanghai, {"STOPHUB_TZ": "Europe/Paris"}) is shanghai
    assert resolve_display_zone(None, {"STOPHUB_TZ": "asia/shanghai"}) == shanghai
    # Neither: the shipped policy's [display] time_zone.
    assert resolve_display_zone(None, {}) == display_zone()
    with pytest.raises(click.ClickException, match=r"\$STOPHUB_TZ='Mars' is not an IANA"):
        resolve_display_zone(None, {"STOPHUB_TZ": "Mars"})


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (
            OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")),
            "database is locked: another process holds the database's write lock",
        ),
        (
            OperationalError(None, {}, sqlite3.OperationalError("unable to open database file")),
            "unable to open database file: check that the file and its directory exist",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "var/stophub.db"),
            "var/stophub.db: Permission denied: run as a user who may use it",
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "trail.svg"),
            "trail.svg: No space left on device: free some space",
        ),
    ],
)
def test_operational_failures_say_what_to_do(failure: BaseException, said: str) -> None:
    line = one_line(failure)
    assert line is not None and said in line and "\n" not in line


def test_a_bug_keeps_its_traceback() -> None:
    assert one_line(ValueError("a bug")) is None


def table(*rows: tuple[str, ...]) -> Table:
    made = Table(title="cases")
    for header in ("case", "state", "what happened"):
        made.add_column(header)
    for row in rows:
        made.add_row(*row)
    return made


def rendered(renderable: object, width: int) -> str:
    out = make_console(width=width, record=True)
    out.print(fit(renderable, width), crop=False)  # type: ignore[arg-type]
    return out.export_text()


def test_a_table_wider_than_the_screen_wraps_between_words() -> None:
    wide = table(("C20261203-4EEEE62E", "verified", "stop order to BANKB " * 4))
    text = rendered(wide, 60)
    assert "C20261203-4EEEE62E" in text and "verified" in text and "…" not in text
    assert max(map(len, text.splitlines())) <= 60


def test_a_table_that_cannot_fit_shows_its_rows_as_records() -> None:
    text = rendered(table(("C20261203-4EEEE62E", "verified", "stop")), 40)
    assert "case           C20261203-4EEEE62E" in text
    assert "what happened  stop" in text
    assert max(map(len, text.splitlines())) <= 40


def test_piped_output_is_as_wide_as_its_content(capsys: pytest.CaptureFixture[str]) -> None:
    wide = " ".join(f"C20261203-{i:08X}" for i in range(12))  # 227 characters
    show(table(("C20261203-4EEEE62E", "verified", wide)))
    lines = capsys.readouterr().out.splitlines()
    assert any(wide in line for line in lines), "one row, one line: nothing folded at 200"
    assert max(map(len, lines)) == max(len(line.rstrip()) for line in lines), "no padding"
