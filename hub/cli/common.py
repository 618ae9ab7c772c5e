"""What every `stophub` command module shares: the options several commands take (--db,
--tls-dir, --data-keys, --hub-key, --json, ids in any letter case), what the main group's
options chose (the database, the keyring, the display zone, the log format), opening the
store (read-only unless a command writes), refusals as one-line errors, the operator's
lines, printing for people (nothing cut) and for scripts (JSON), the clock, the hub's public
keys, how a verification of the audit log is printed, and the options that make a read
command ask the hub over gRPC as a member institution instead (--identity, --as, --hub).
It is over 600 lines because these are shared by every command group: split by topic, each
part would be imported by the same modules.

Command modules import this module, never `hub.cli` itself: only hub/cli/__init__.py imports
the command modules, to register them, so there is no cycle.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from click.core import ParameterSource
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from adapters.sdk import HubError, HubSignatureError
from adapters.sdk.failover import parse_targets
from adapters.sdk.identity import Identity, IdentityError, load_identity
from hub import bootstrap
from hub.crypto import fields, pki
from hub.crypto.public import public_key_from_file, public_key_from_pem
from hub.crypto.signing import SignatureError, key_id_for
from hub.domain.clocks import PolicyError
from hub.domain.errors import DomainError
from hub.observability.logs import LogFormat
from hub.service.admin import NewKey
from hub.service.auditverify import Verification
from hub.service.exports import ExportError
from hub.service.ports import Clock, StoreUnavailable
from hub.store.sql import NoDatabase, SqlStore, normalise_url, shown_url
from hub.system.clock import SystemClock
from hub.system.policy import display_zone as policy_display_zone
from hub.system.policy import find_zone

F = TypeVar("F", bound=Callable[..., Any])

# The CLI's own log lines go under this name whatever module writes them: operators filter on it.
log = logging.getLogger("hub.cli")

ENV_DATABASE = "STOPHUB_DATABASE_URL"
ENV_TZ = "STOPHUB_TZ"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# ---- what the main group's options chose (hub/cli/__init__.py) -----------------------------------


@dataclass
class GroupOptions:
    """What `stophub --db … --data-keys … --tz … --log-level … --log-format …` chose, for the
    command that runs; the same options given after the command replace them."""

    database_url: str | None = None
    data_keys: str | None = None
    data_keys_from: str = ""  # where `data_keys` came from, for the message when it is absent
    log_level: str = "WARNING"
    log_format: LogFormat = "text"
    opened: str = ""  # the database a command opened, as people may read its URL


chosen = GroupOptions()


class ZoneParam(click.ParamType[tzinfo]):
    """An IANA time zone name (Asia/Shanghai, UTC), in any letter case."""

    name = "ZONE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tzinfo:
        if isinstance(value, tzinfo):
            return value
        zone = find_zone(str(value))
        if zone is None:
            self.fail(f"{value!r} is not an IANA time zone: give one such as Asia/Shanghai or UTC")
        return zone


def default_display_zone() -> tzinfo:
    """The display zone when neither --tz nor $STOPHUB_TZ names one: the shipped policy
    file's `[display] time_zone` (hub/system/policy.toml)."""
    try:
        return policy_display_zone()
    except PolicyError as err:
        raise click.ClickException(str(err)) from err


def resolve_display_zone(given: tzinfo | None, environ: Mapping[str, str] = os.environ) -> tzinfo:
    """The zone the views write instants in: --tz, else $STOPHUB_TZ, else the default.
    Storage, signatures and --json stay in UTC whatever it is."""
    if given is not None:
        return given
    name = environ.get(ENV_TZ, "").strip()
    if not name:
        return default_display_zone()
    zone = find_zone(name)
    if zone is None:
        raise click.ClickException(
            f"${ENV_TZ}={name!r} is not an IANA time zone: set it to one such as "
            "Asia/Shanghai, or unset it"
        )
    return zone


def database_url_given(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """--db's check: a URL of a database StopHub runs on, refused at once otherwise."""
    if value is None:
        return None
    try:
        backend = make_url(normalise_url(value)).get_backend_name()
    except (ArgumentError, ValueError):
        backend = ""
    if backend not in ("sqlite", "postgresql"):
        from_env = value == os.environ.get(ENV_DATABASE) and (
            ctx.get_parameter_source(param.name or "") is not ParameterSource.COMMANDLINE
        )
        raise click.BadParameter(
            f"{value!r}{f' (${ENV_DATABASE})' if from_env else ''} is not a database URL: "
            "give sqlite:///path/to/file.db or postgresql://user@host/db",
            ctx,
            param,
        )
    chosen.opened = shown_url(value)  # for the message if it cannot be opened
    return value


DB_HELP = "Database URL: sqlite:///path/to/file.db or postgresql://user@host/db."
DATA_KEYS_HELP = (
    f"Data keyring sealing personal data (default: ${fields.ENV_FILE}, else ${fields.ENV_KEYS}, "
    f"else {fields.DEFAULT_FILE})."
)


# ---- options of the commands ---------------------------------------------------------------------


def the_group_database() -> str | None:
    """`stophub --db URL …`'s URL, for a command whose own --db has no other default."""
    return chosen.database_url


def _database_url() -> str:
    return the_group_database() or os.environ.get(ENV_DATABASE) or bootstrap.DEFAULT_DATABASE


db_option = click.option(
    "--db",
    "database_url",
    metavar="URL",
    default=_database_url,
    show_default=f"stophub --db, ${ENV_DATABASE} or {bootstrap.DEFAULT_DATABASE}",
    callback=database_url_given,
    help=DB_HELP,
)


def tls_dir_option(*names: str, help: str) -> Callable[[F], F]:
    """A PKI directory: `$STOPHUB_TLS_DIR` or var/pki unless given."""
    return click.option(
        *names,
        default=lambda: os.environ.get("STOPHUB_TLS_DIR", bootstrap.DEFAULT_TLS_DIR),
        show_default="$STOPHUB_TLS_DIR or " + bootstrap.DEFAULT_TLS_DIR,
        type=click.Path(file_okay=False),
        help=help,
    )


data_keys_option = click.option(
    "--data-keys",
    "data_keys",
    default=None,
    envvar=fields.ENV_FILE,
    type=click.Path(dir_okay=False),
    help=DATA_KEYS_HELP,
)

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON for scripts instead of a table: one object, its schema in docs/cli.md "
    "(money in fen, times in UTC, ids in full).",
)


class HubId(click.ParamType[str]):
    """An id the hub makes in one letter case, accepted in any (`case show c20261203-4eeee62e`):
    case ids (hub/service `new_case_id`) and institution codes (`CODE_PATTERN`) upper case,
    key ids (`key_id_for`) lower case hex."""

    def __init__(self, name: str, fold: Callable[[str], str] = str.upper) -> None:
        self.name = name
        self._fold = fold

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return self._fold(str(value).strip())


CASE_ID = HubId("CASE_ID")
CODE = HubId("CODE")
KEY_ID = HubId("KEY_ID", str.lower)

# ---- the keyring -------------------------------------------------------------------------------


def use_data_keys(file: str | None = None, *, reading: bool = False) -> fields.Keyring:
    """Configure the process-wide keyring (module doc of hub.crypto.fields for the order).
    `reading`: for a command that reads a database sealed with some keyring, a missing one
    is reported with where it was looked for, and never with advice to make a new one
    (which could not open what is sealed)."""
    if file is None and chosen.data_keys is None and fields.configured() is not None:
        return fields.keyring()  # a test or an embedding process configured it already
    try:
        ring = fields.resolve_keyring(file or chosen.data_keys)
    except fields.DataKeysNotConfigured as err:
        if reading:
            raise click.ClickException(_keyring_not_found(file)) from err
        raise click.ClickException(str(err)) from err
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    fields.configure(ring)
    return ring


def _keyring_not_found(file: str | None) -> str:
    what = (
        "give the keyring this database was sealed with: --data-keys FILE, "
        f"${fields.ENV_FILE} or ${fields.ENV_KEYS} (a new keyring cannot open it)"
    )
    if file is not None:
        return f"no data keys at {file} (--file): {what}"
    if chosen.data_keys is not None:
        return f"no data keys at {chosen.data_keys} ({chosen.data_keys_from}): {what}"
    return (
        f"no data keys: no --data-keys, ${fields.ENV_FILE} or ${fields.ENV_KEYS} given, and "
        f"no {fields.DEFAULT_FILE} in {Path.cwd()}: {what}"
    )


def keyring_file(file: str | None) -> Path:
    """The keyring file a command works on: its --file, the group's --data-keys, the default."""
    return Path(file or chosen.data_keys or fields.DEFAULT_FILE)


# ---- the store ---------------------------------------------------------------------------------


def open_store(database_url: str, *, write: bool = False, keyring: str | None = None) -> SqlStore:
    """The hub's database. For reading (the default): an existing database, opened
    read-only, whose schema is this code's; it is never created or migrated, and anything
    else is a one-line error that says what to do. `write` (the registry's commands): the
    schema brought to the newest revision first, the database created if new. `keyring`: a
    command's own keyring file (`datakeys status --file`), else the group's choice."""
    chosen.opened = shown_url(database_url)
    if write:
        use_data_keys(keyring)
        bootstrap.migrate(database_url)
        return SqlStore(database_url)
    try:
        store = SqlStore(database_url, read_only=True)
    except NoDatabase as err:
        if err.path.is_dir():
            raise click.ClickException(
                f"{err.path} is a directory: give the database file, --db sqlite:///path/to/file.db"
            ) from err
        raise click.ClickException(
            f"no database at {err.path} ({_database_source(database_url)}): name the hub's "
            f"database with --db URL or ${ENV_DATABASE}; a new hub's is created with "
            f"`stophub migrate --db {chosen.opened}`"
        ) from err
    try:
        _check_schema(store, database_url)
        use_data_keys(keyring, reading=True)
    except BaseException:
        store.dispose()
        raise
    return store


def _database_source(database_url: str) -> str:
    if database_url == chosen.database_url:
        return "stophub --db"
    if database_url == os.environ.get(ENV_DATABASE):
        return f"${ENV_DATABASE}"
    return "--db" if database_url != bootstrap.DEFAULT_DATABASE else "the default"


def _check_schema(store: SqlStore, database_url: str) -> None:
    """Refuse a schema this code cannot read: none, behind its revision, or ahead of it."""
    script = ScriptDirectory.from_config(bootstrap.alembic_config(database_url))
    head = script.get_current_head()
    found = store.schema_revisions()
    if found == (head,):
        return
    where = chosen.opened
    if not found:
        raise click.ClickException(
            f"{where} holds no StopHub schema: is it the hub's database? A new hub's is "
            f"created with `stophub migrate --db {where}`"
        )
    known = {r.revision for r in script.walk_revisions()}
    ahead = [r for r in found if r not in known]
    if ahead:
        raise click.ClickException(
            f"{where} has schema revision {ahead[0]}, newer than this StopHub's {head}: "
            "read it with the StopHub version the hub runs"
        )
    raise click.ClickException(
        f"{where} has schema revision {', '.join(found)}, behind this StopHub's {head}: the "
        f"hub's operator brings it up to date with `stophub migrate --db {where}` (or by "
        "starting `stophub serve`); this command reads and never migrates"
    )


# ---- failures as one line ------------------------------------------------------------------------

# Refusals: the message already says what was wrong and what to do. Over gRPC (--identity):
# the hub's refusals and failures to reach it (HubError: its status code first), answers that
# do not verify (HubSignatureError), an identity directory that cannot be used.
REFUSALS = (
    SignatureError,
    pki.PkiError,
    ExportError,
    FileExistsError,
    fields.DataKeyError,
    HubError,
    HubSignatureError,
    IdentityError,
)


def refusal_line(err: BaseException) -> str | None:
    """A refusal (the hub's rules, a key, a certificate, a file's format) as the one line the
    command line prints; None for anything else."""
    if isinstance(err, DomainError):
        return f"{err.code}: {err.message}"
    if isinstance(err, HubError):
        return _hub_refusal(err)
    if isinstance(err, HubSignatureError):
        return " ".join(f"the hub's answer cannot be trusted: {err}".split())
    if isinstance(err, REFUSALS):
        return " ".join(str(err).split())
    return None


def _hub_refusal(err: HubError) -> str:
    """The hub's refusal as HubError says it (status code, reason, message, field), without
    the message id, which is for the hub's audit log, not for the person reading."""
    reason = f" {err.reason}" if err.reason else ""
    field = f" [field {err.field}]" if err.field else ""
    return " ".join(f"{err.code.name}{reason}: {err.message or '(no message)'}{field}".split())


def refusals_as_errors(fn: F) -> F:
    """Domain refusals and unusable files become a one-line error and exit status 1, not a
    traceback (also for a command invoked on its own, outside the main group)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DomainError, *REFUSALS, FileNotFoundError) as err:
            line = refusal_line(err) or " ".join(str(err).split())
            raise click.ClickException(line) from err

    return wrapper  # type: ignore[return-value]


# ---- how commands run and print ----------------------------------------------------------------


def announce(message: str) -> None:
    """A line for the operator on stderr: as it is in text mode, as a log record (one JSON
    object) when the logs are JSON, so a log shipper never meets a line it cannot parse."""
    if chosen.log_format == "json":
        log.info("%s", message)
    else:
        click.echo(message, err=True)


def command_clock() -> Clock:
    """Real time; a caller that drives the command itself (a test, a drill) may pass its own
    clock as `obj={"clock": ...}` to the click invocation."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, dict) and obj.get("clock") is not None:
        return cast(Clock, obj["clock"])
    return SystemClock()


def utc(moment: datetime | None) -> str | None:
    """An instant for --json: RFC 3339 in UTC with a Z (docs/cli.md), whatever --tz says."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def print_json(document: Mapping[str, Any]) -> None:
    """One JSON document on standard output (--json), its schema in docs/cli.md."""
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


def read_public_key(path: str) -> NewKey:
    """A member's public key file (PEM), to register."""
    algorithm, raw = public_key_from_pem(Path(path).read_bytes())
    return NewKey(algorithm, raw)


# ---- the hub's public keys ---------------------------------------------------------------------


def read_hub_public_key(path: str) -> tuple[str, bytes]:
    """(key id, raw public key) of the hub from a file, in the forms docs/signing.md's "Key
    files" lists (hub.crypto.public.public_key_from_file); anything else is refused with one
    line naming the file."""
    try:
        algorithm, key = public_key_from_file(Path(path).read_bytes())
    except OSError as err:
        raise click.ClickException(f"{path}: cannot read the hub's public key: {err}") from err
    except SignatureError as err:
        raise click.ClickException(f"{path}: {' '.join(str(err).split())}") from err
    return key_id_for(algorithm, key), key


HubKeys = dict[str, bytes]  # the hub's public keys by key id, in the order given


def _hub_keys(_ctx: click.Context, _param: click.Parameter, files: tuple[str, ...]) -> HubKeys:
    return dict(read_hub_public_key(file) for file in files)


def hub_key_option(*, required: bool, help: str) -> Callable[[F], F]:
    """--hub-key FILE, repeatable (both keys while the hub rotates its own): the hub's public
    keys, read with `read_hub_public_key` as the command line is parsed. The command gets them
    as `hub_keys`, by key id."""
    return click.option(
        "--hub-key",
        "hub_keys",
        required=required,
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        callback=_hub_keys,
        help=help,
    )


def print_verification(result: Verification) -> None:
    """Each problem on stderr, named (entry, position), what each kept checkpoint proved,
    then the summary lines."""
    waiting = [f for f in result.findings if f.what == "unsequenced"]
    for f in result.findings:
        if f.what == "unsequenced":
            continue
        where = " ".join(
            x
            for x in (
                f"entry {f.entry_id}" if f.entry_id is not None else "",
                f"position {f.log_index}" if f.log_index is not None else "",
            )
            if x
        )
        click.echo(f"{f.what.upper()}: {where + ': ' if where else ''}{f.detail}", err=True)
    for k in result.kept:
        click.echo(f"kept checkpoint of {k.tree_size} entries ({k.source}): {KEPT[k.outcome]}")
    click.echo(
        f"{result.entries} entries, tree of {result.tree_size} (root {result.root.hex()}), "
        f"{result.checkpoints} checkpoint(s) verified, {result.checkpoints_failed} failed; "
        f"{len(waiting)} entr(ies) waiting for their place; "
        f"{len(result.findings) - len(waiting)} problem(s)"
    )
    if result.uncovered:
        click.echo(
            f"{result.uncovered} entr(ies) after the newest verified checkpoint: no signature "
            "covers them yet"
        )
    if result.placed_during:
        click.echo(
            f"{result.placed_during} entr(ies) placed while the check ran (a live hub): the "
            "next check covers them"
        )


# What a kept checkpoint proved of the tree (docs/audit.md, "Keeping a checkpoint").
KEPT = {
    "consistent": "consistent: the log still holds it and grew only by appending",
    "rollback": "ROLLBACK: the log is smaller than it was (truncated, or restored from an "
    "older copy)",
    "fork": "FORK: the log's first entries now make another root (rewritten)",
}


# ---- personal data -----------------------------------------------------------------------------

# The one switch that unmasks people, the same on every command that shows them.
personal_data_option = click.option(
    "--personal-data",
    "personal_data",
    is_flag=True,
    help="Show people in full: names, account numbers, ID numbers and phones, for those "
    "entitled to them (docs/personal-data.md). Without it they are masked.",
)


def file_failure(err: OSError) -> str:
    """A file that cannot be read or written, as one line: which, why, and what to do."""
    where = err.filename if err.filename is not None else ""
    what = err.strerror or str(err)
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "run as a user who may use it, or change its permissions"
    elif err.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "check the path"
    elif err.errno == errno.ENOSPC:
        hint = "free some space and run it again"
    elif err.errno == errno.EISDIR:
        hint = "give a file, not a directory"
    else:
        hint = "check the file and run it again"
    return f"{where}: {what}: {hint}" if where else f"{what}: {hint}"


# ---- reading over gRPC as a member (hub/cli/remote.py) -----------------------------------------

ENV_IDENTITY = "STOPHUB_IDENTITY"
_HUB_HELP = (
    "The hub to ask over gRPC, HOST:PORT, or its replicas comma-separated (default: hub in "
    "identity.toml). Needs --identity."
)
_AS_HELP = "The institution to ask as (default: institution in identity.toml). Needs --identity."
_ID_HELP = (
    "Read over gRPC as the institution of this identity directory (docs/cli.md), seeing what "
    f"the hub shows it; without it (nor ${ENV_IDENTITY}), read the hub's database."
)


def hub_targets(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A --hub value: HOST:PORT, or several comma-separated (the replicas of one hub, tried in
    that order: docs/failover.md); a bad one is a usage error that says the form."""
    if value is None:
        return None
    try:
        return ",".join(parse_targets(value))
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


def remote_options(fn: F) -> F:
    """--identity DIR (or $STOPHUB_IDENTITY), --as CODE, --hub HOST:PORT: with an identity
    directory (adapters/sdk/identity.py) the command reads over gRPC as that institution,
    scoped by the hub's permission matrix; without, it reads the database as the hub's own
    operator. --as and --hub override identity.toml's. The command gets `identity`: the
    loaded Identity, or None."""

    @click.option(
        "--hub", "hub_address", metavar="HOST:PORT[,...]", callback=hub_targets, help=_HUB_HELP
    )
    @click.option("--as", "as_code", type=CODE, metavar="CODE", help=_AS_HELP)
    @click.option("--identity", "identity_dir", metavar="DIR", envvar=ENV_IDENTITY, help=_ID_HELP)
    @wraps(fn)
    def wrapper(
        *args: Any,
        identity_dir: str | None,
        as_code: str | None,
        hub_address: str | None,
        **kwargs: Any,
    ) -> Any:
        return fn(*args, identity=chosen_identity(identity_dir, as_code, hub_address), **kwargs)

    return wrapper  # type: ignore[return-value]


def chosen_identity(
    directory: str | None, institution: str | None, hub: str | None
) -> Identity | None:
    """The identity --identity, --as and --hub name; None to read the database. --as or
    --hub alone is a usage error: they say whom to ask as and where, not with which keys."""
    if not directory:
        given = [name for name, value in (("--hub", hub), ("--as", institution)) if value]
        if given:
            raise click.UsageError(
                f"{' and '.join(given)} read the hub over gRPC: give --identity DIR too (or "
                f"${ENV_IDENTITY}), the institution's identity directory"
            )
        return None
    try:
        identity = load_identity(directory, institution=institution, hub=hub)
    except IdentityError as err:
        raise click.ClickException(" ".join(str(err).split())) from err
    if not identity.hub:
        raise click.ClickException(
            f"{identity.directory / 'identity.toml'} names no hub: give --hub HOST:PORT or add "
            'hub = "HOST:PORT" to it'
        )
    return identity


# ---- failures as one line --------------------------------------------------------------------


def one_line(err: BaseException) -> str | None:
    """What a failure says to the person at the command line, in one line; None for an
    error that is a bug, which keeps its traceback."""
    if (line := refusal_line(err)) is not None:
        return line
    if isinstance(err, (DBAPIError, StoreUnavailable)):
        return _database_failure(err)
    if isinstance(err, CommandError):  # Alembic: a revision it cannot place
        return (
            f"{chosen.opened or 'the database'}: {' '.join(str(err).split())}: it was migrated "
            "by another StopHub version; run the version the hub runs"
        )
    if isinstance(err, OSError):
        return file_failure(err)
    return None


# What to do about a database the driver could not use, by what the driver said.
_DATABASE_HINTS = (
    (
        (
            "connection refused",
            "could not translate host",
            "timeout expired",
            "no route",
            "timed out",
            "server closed the connection",
            "network is unreachable",
            "no such file or directory",
        ),
        f"check that the database server runs there and that --db (or ${ENV_DATABASE}) names it",
    ),
    (
        ("password authentication failed", "no password supplied", "role "),
        "check the user and password in --db",
    ),
    (("does not exist",), "check the database name in --db"),
    (
        ("database is locked",),
        "another process holds the database's write lock (a running hub, a migration): "
        "try again when it is done",
    ),
    (
        ("readonly database", "read-only"),
        "this user may not write the database: run the command as the hub's user",
    ),
    (
        ("unable to open database file",),
        "check that the file and its directory exist and that this user may read them",
    ),
    (
        ("not a database", "malformed", "disk i/o"),
        "is --db a StopHub database, and is its disk sound?",
    ),
)


def _database_failure(err: BaseException) -> str:
    cause = err.__cause__ if isinstance(err, StoreUnavailable) and err.__cause__ else err
    said = cause.orig if isinstance(cause, DBAPIError) and cause.orig is not None else cause
    first = " ".join((str(said).strip().splitlines() or [type(said).__name__])[0].split())
    first = first.removeprefix("connection failed: ")  # psycopg says it twice
    hint = next(
        (h for needles, h in _DATABASE_HINTS if any(n in first.lower() for n in needles)),
        f"check --db (or ${ENV_DATABASE})",
    )
    return f"{chosen.opened or 'the database'}: {first}: {hint}"
