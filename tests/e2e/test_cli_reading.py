"""Commands that read never write (docs/cli.md): they open an existing database read-only,
never create or migrate one, and say in one line what to do when they cannot read it; the
main group's options are taken after the command too; every failure is one line. On SQLite
and PostgreSQL."""

from __future__ import annotations

import hashlib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from hub import bootstrap
from hub.cli import main
from hub.crypto import fields
from hub.crypto.keys import PrivateKey
from hub.crypto.public import public_key_to_pem
from hub.domain.institutions import HUB_CODE
from hub.domain.rules import AutoStopRule
from hub.store.sql import SqlStore, normalise_url
from tests.conftest import T0

CASE = "C20260302-0000ABCD"


def _hub_pub() -> str:
    """A hub public key file for `audit verify`, which needs one before it opens anything."""
    key = PrivateKey.generate()
    path = Path(tempfile.mkdtemp(prefix="stophub-hub-key-")) / "hub.pub"
    path.write_bytes(public_key_to_pem(key.algorithm, key.public_key))
    return str(path)


HUB_PUB = _hub_pub()
# `audit verify` exits 2 when it cannot make its check (docs/audit.md); every other read 1.
EXIT = {"audit verify": 2}
READS = {
    "case list": ["case", "list"],
    "case show": ["case", "show", CASE],
    "case trail": ["case", "trail", CASE],
    "sla": ["sla"],
    "board": ["board", "--once"],
    "appeal list": ["appeal", "list"],
    "warning list": ["warning", "list"],
    "warning show": ["warning", "show", "W20260302-0000ABCD"],
    "list show": ["list", "show"],
    "institution list": ["institution", "list"],
    "institution show": ["institution", "show", "BANKA"],
    "audit verify": ["audit", "verify", "--hub-key", HUB_PUB],
    "audit signatures": ["audit", "signatures"],
    "audit export": ["audit", "export", "--personal-data"],
    "sla-export": ["sla-export"],
    "report sla": ["report", "sla", "--from", "2026-03-01", "--to", "2026-03-02", "--out", "r"],
    "report outcomes": ["report", "outcomes", "--from", "2026-03-01", "--to", "2026-03-02"],
    "datakeys status": ["datakeys", "status"],
}


def stophub(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, list(args), prog_name="stophub")


def one_line_error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def previous_revision(url: str) -> str:
    script = ScriptDirectory.from_config(bootstrap.alembic_config(url))
    down = script.get_revision(script.get_current_head()).down_revision
    assert isinstance(down, str)
    return down


def revision_of(url: str) -> str:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("read", sorted(READS))
def test_a_read_creates_no_database_and_says_how_to_make_one(in_tmp: Path, read: str) -> None:
    db = in_tmp / "nowhere" / "hub.db"
    line = one_line_error(stophub(*READS[read], "--db", f"sqlite:///{db}"), EXIT.get(read, 1))
    assert f"no database at {db}" in line and f"stophub migrate --db sqlite:///{db}" in line
    assert not (in_tmp / "nowhere").exists(), "no directory, no file"


def test_a_directory_is_not_a_database(in_tmp: Path) -> None:
    line = one_line_error(stophub("case", "list", "--db", f"sqlite:///{in_tmp}"))
    assert f"{in_tmp} is a directory: give the database file" in line


def test_the_default_database_is_not_created_either(in_tmp: Path) -> None:
    line = one_line_error(stophub("case", "list", env={"STOPHUB_DATABASE_URL": None}))
    assert "no database at var/stophub.db (the default)" in line
    assert not (in_tmp / "var").exists()


@pytest.fixture(params=["sqlite", "postgresql"])
def behind(request: pytest.FixtureRequest, in_tmp: Path) -> Iterator[str]:
    """A hub's database one schema revision behind this code's."""
    url = (
        f"sqlite:///{in_tmp}/hub.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    command.upgrade(bootstrap.alembic_config(url), previous_revision(url))
    yield url


@pytest.mark.parametrize("read", sorted(READS))
def test_a_read_never_migrates(behind: str, read: str) -> None:
    before = revision_of(behind)
    line = one_line_error(stophub(*READS[read], "--db", behind), EXIT.get(read, 1))
    assert f"has schema revision {before}, behind this StopHub's" in line
    assert "stophub migrate --db" in line
    assert revision_of(behind) == before, "the schema is as it was"
    assert "schema at head" in stophub("migrate", "--db", behind).output
    assert revision_of(behind) != before


def test_a_database_without_the_schema_is_named(in_tmp: Path, postgres_url: str) -> None:
    (in_tmp / "empty.db").touch()
    for url in (f"sqlite:///{in_tmp}/empty.db", postgres_url):
        line = one_line_error(stophub("case", "list", "--db", url))
        assert "holds no StopHub schema" in line and "stophub migrate --db" in line


def test_reads_leave_the_database_file_as_it_was(in_tmp: Path) -> None:
    db = in_tmp / "hub.db"
    assert stophub("migrate", "--db", f"sqlite:///{db}").exit_code == 0
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for read in sorted(READS):
        result = stophub(*READS[read], "--db", f"sqlite:///{db}")
        assert "Traceback" not in result.output and "no database" not in result.output, read
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_read_only_store_refuses_writes_in_the_database(database_url: str) -> None:
    bootstrap.migrate(database_url)
    store = SqlStore(database_url, read_only=True)
    try:
        with store(read_only=True) as uow:
            assert uow.institutions.get(HUB_CODE) is None
        with pytest.raises(DBAPIError, match=r"(?i)read-?only"), store() as uow:
            uow.rules.put(AutoStopRule("CENTRE", "R1", True, 100, T0, "m-1", b"signed"))
            uow.commit()
    finally:
        store.dispose()


# ---- the main group's options, before the command or after it ------------------------------------


@pytest.fixture
def sealed(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A hub database whose duty contacts are sealed under a keyring only a file holds."""
    keys = in_tmp / "dk.json"
    fields.Keyring.generate("dk-file").save(keys)
    db = f"sqlite:///{in_tmp}/hub.db"
    added = stophub(
        "--data-keys", str(keys), "--db", db, "institution", "add", "--code", "BANKA",
        "--name", "Bank A", "--kind", "bank", "--primary", "Wang Li,+86-10-1",
        "--backup", "Zhao Min,+86-10-2",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    fields.configure(None)
    monkeypatch.delenv(fields.ENV_KEYS)
    return db, keys


def test_data_keys_and_db_before_or_after_the_command(sealed: tuple[str, Path]) -> None:
    db, keys = sealed
    for args in (
        ["--data-keys", str(keys), "--db", db, "institution", "show", "BANKA"],
        ["institution", "show", "BANKA", "--data-keys", str(keys), "--db", db],
        ["--db", db, "institution", "show", "BANKA", "--data-keys", str(keys)],
        ["--tz", "Asia/Shanghai", "institution", "show", "banka", "--db", db,
         "--data-keys", str(keys), "--log-level", "info", "--log-format", "text"],
    ):  # fmt: skip
        result = stophub(*args)
        assert result.exit_code == 0, (args, result.output)
        assert "Zhao Min" in result.output, "opened with the file's keys"


def test_a_read_without_its_keyring_says_where_it_looked(
    sealed: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, keys = sealed
    keys.rename(keys.with_name("elsewhere.json"))
    given = one_line_error(stophub("institution", "list", "--db", db, "--data-keys", str(keys)))
    assert f"no data keys at {keys} (--data-keys)" in given
    monkeypatch.setenv(fields.ENV_FILE, str(keys))
    from_env = one_line_error(stophub("institution", "list", "--db", db))
    assert f"no data keys at {keys} ($STOPHUB_DATA_KEYS_FILE)" in from_env
    monkeypatch.delenv(fields.ENV_FILE)
    default = one_line_error(stophub("institution", "list", "--db", db))
    assert "no --data-keys, $STOPHUB_DATA_KEYS_FILE or $STOPHUB_DATA_KEYS given" in default
    assert f"no {fields.DEFAULT_FILE}" in default
    for line in (given, from_env, default):
        assert "datakeys generate" not in line, "a new keyring cannot open what is sealed"
        assert "give the keyring this database was sealed with" in line


# ---- failures are one line ----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_postgresql_is_one_line() -> None:
    port = closed_port()
    url = f"postgresql://stophub:secret@127.0.0.1:{port}/hub"
    for args in (["case", "list"], ["migrate"], ["institution", "list", "--json"]):
        line = one_line_error(stophub(*args, "--db", url))
        assert line.startswith(f"Error: postgresql://stophub:***@127.0.0.1:{port}/hub: ")
        assert "check that the database server runs there" in line
        assert "secret" not in line, "never the password"


def test_no_message_shows_the_database_password(postgres_url: str) -> None:
    url = postgres_url.replace("postgresql+psycopg://postgres@", "postgresql://postgres:secret@")
    assert ":secret@" in url
    assert stophub("migrate", "--db", url).output == (
        f"schema at head: {url.replace(':secret@', ':***@')}\n"
    )
    line = one_line_error(stophub("case", "show", CASE, "--db", url))
    assert "postgres:***@" in line and "secret" not in line


def test_bad_input_is_one_line_with_exit_status_2(in_tmp: Path) -> None:
    assert "Invalid value for '--log-level'" in one_line_error(
        stophub("--log-level", "LOUD", "case", "list"), 2
    )
    assert "Invalid value for '--log-level'" in one_line_error(
        stophub("case", "list", "--log-level", "LOUD"), 2
    )
    assert "is not a database URL" in one_line_error(stophub("case", "list", "--db", "foo://x"), 2)
    assert "STOPHUB_DATABASE_URL" in one_line_error(
        stophub("case", "list", env={"STOPHUB_DATABASE_URL": "mysql://x/y"}), 2
    )
    assert "not an IANA time zone" in one_line_error(stophub("--tz", "Mars/Base", "sla"), 2)
    assert "STOPHUB_TZ" in one_line_error(stophub("sla", env={"STOPHUB_TZ": "Mars/Base"}))
    assert "stophub case show --help" in one_line_error(stophub("case", "show"), 2)


def test_a_file_that_cannot_be_written_is_one_line(in_tmp: Path) -> None:
    db = f"sqlite:///{in_tmp}/hub.db"
    assert stophub("migrate", "--db", db).exit_code == 0
    out = in_tmp / "missing" / "r.html"
    line = one_line_error(
        stophub("report", "sla", "--from", "2026-03-01", "--to", "2026-03-02", "--out", str(out),
                "--db", db)
    )  # fmt: skip
    assert str(out) in line and "No such file or directory" in line and "check the path" in line
