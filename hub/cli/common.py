"""What every `stophub` command module shares: the options several commands take (--db,
--tls-dir, --data-keys, --hub-key), reading the hub's public keys, the main group's settings
and the keyring they choose, opening the store, refusals as one-line errors, the operator's
lines, the console and the clock, and how a verification of the audit log is printed.

Command modules import this module, never `hub.cli` itself: only hub/cli/__init__.py imports
the command modules, to register them, so there is no cycle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console

from hub import bootstrap
from hub.crypto import fields, pki
from hub.crypto.public import public_key_from_pem
from hub.crypto.signing import ED25519, SignatureError, key_id_for
from hub.domain.errors import DomainError
from hub.domain.institutions import HUB_CODE
from hub.observability.logs import LogFormat
from hub.service.admin import NewKey
from hub.service.auditlog import Verification
from hub.service.exports import ExportError
from hub.service.ports import Clock
from hub.store.sql import SqlStore
from hub.system.clock import SystemClock

F = TypeVar("F", bound=Callable[..., Any])

ALARM = "bold red"


def make_console(**options: Any) -> Console:
    """A console that prints what it is given, as given: no emoji codes (`:ab:` in a hex
    fingerprint became an emoji), no markup (a holder name a bank sent could carry `[bold]`),
    no highlighting of numbers and ids. Styles come from rich Text objects only."""
    return Console(emoji=False, markup=False, highlight=False, **options)


console = make_console()

# The CLI's own log lines go under this name whatever module writes them: operators filter on it.
log = logging.getLogger("hub.cli")

# ---- options -------------------------------------------------------------------------------------

db_option = click.option(
    "--db",
    "database_url",
    default=lambda: os.environ.get("STOPHUB_DATABASE_URL", bootstrap.DEFAULT_DATABASE),
    show_default="$STOPHUB_DATABASE_URL or " + bootstrap.DEFAULT_DATABASE,
    help="Database URL: sqlite:///path/to/file.db or postgresql://user@host/db.",
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
    help=f"Data keyring sealing personal data (default: ${fields.ENV_KEYS} if set, else "
    f"{fields.DEFAULT_FILE}; create it with `stophub datakeys generate`).",
)

# ---- the main group's settings, for every command ----------------------------------------------

_data_keys_file: str | None = None  # the group's --data-keys
_log_format: LogFormat = "text"  # the group's --log-format


def remember_group_options(data_keys: str | None, log_format: LogFormat) -> None:
    """What `stophub --data-keys … --log-format …` chose, for the command that runs."""
    global _data_keys_file, _log_format
    _data_keys_file = data_keys
    _log_format = log_format


def announce(message: str) -> None:
    """A line for the operator on stderr: as it is in text mode, as a log record (one JSON
    object) when the logs are JSON, so a log shipper never meets a line it cannot parse."""
    if _log_format == "json":
        log.info("%s", message)
    else:
        click.echo(message, err=True)


def use_data_keys(file: str | None = None) -> fields.Keyring:
    """Configure the process-wide keyring (module doc of hub.crypto.fields for the order)."""
    if file is None and _data_keys_file is None and fields.configured() is not None:
        return fields.keyring()  # a test or an embedding process configured it already
    try:
        ring = fields.resolve_keyring(file or _data_keys_file)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    fields.configure(ring)
    return ring


def keyring_file(file: str | None) -> Path:
    """The keyring file a command works on: its --file, the group's --data-keys, the default."""
    return Path(file or _data_keys_file or fields.DEFAULT_FILE)


def open_store(database_url: str) -> SqlStore:
    use_data_keys()
    bootstrap.migrate(database_url)
    return SqlStore(database_url)


# ---- how commands run and print ----------------------------------------------------------------


def refusals_as_errors(fn: F) -> F:
    """Domain refusals and unusable files become a one-line error and exit status 1, not a
    traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DomainError as err:
            raise click.ClickException(f"{err.code}: {err.message}") from err
        except (
            SignatureError,
            pki.PkiError,
            ExportError,
            FileExistsError,
            FileNotFoundError,
        ) as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


def command_clock() -> Clock:
    """Real time; a caller that drives the command itself (a test, a drill) may pass its own
    clock as `obj={"clock": ...}` to the click invocation."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, dict) and obj.get("clock") is not None:
        return cast(Clock, obj["clock"])
    return SystemClock()


def wide_console() -> Console:
    # Pipes and logs are not terminals; their 80 columns would fold every clock row.
    return console if console.is_terminal else make_console(width=200)


def read_public_key(path: str) -> NewKey:
    """A member's public key file (PEM), to register."""
    algorithm, raw = public_key_from_pem(Path(path).read_bytes())
    return NewKey(algorithm, raw)


# ---- the hub's public keys ---------------------------------------------------------------------


def read_hub_public_key(path: str) -> tuple[str, bytes]:
    """(key id, raw public key) of the hub from a file: a PEM public key (the `.pub` that
    `stophub keys generate` writes; Ed25519 or ECDSA P-256) or a raw 32-byte Ed25519 key.
    Anything else is refused with one line naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise click.ClickException(f"{path}: cannot read the hub's public key: {err}") from err
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            algorithm, key = public_key_from_pem(data)
        except SignatureError as err:
            raise click.ClickException(f"{path}: {' '.join(str(err).split())}") from err
    elif len(data) == 32:
        algorithm, key = ED25519, data
    else:
        raise click.ClickException(f"{path}: neither a PEM public key nor a raw Ed25519 key")
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


def registered_hub_keys(store: SqlStore) -> HubKeys:
    """The hub's public keys as the registry in `store` holds them, by key id."""
    with store(read_only=True) as uow:
        hub = uow.institutions.get(HUB_CODE)
        return {k.key_id: k.public_key for k in hub.keys} if hub is not None else {}


def print_verification(result: Verification) -> None:
    """Each problem on stderr, named (entry, position), then one summary line."""
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
    click.echo(
        f"{result.entries} entries, tree of {result.tree_size} (root {result.root.hex()}), "
        f"{result.checkpoints} signed checkpoint(s) matched; {len(waiting)} entr(ies) waiting "
        f"for their place; {len(result.findings) - len(waiting)} problem(s)"
    )
    if result.placed_during:
        click.echo(
            f"{result.placed_during} entr(ies) placed while the check ran (a live hub): the "
            "next check covers them"
        )


# ---- personal data -----------------------------------------------------------------------------

# The one switch that unmasks people, the same on every command that shows them.
personal_data_option = click.option(
    "--personal-data",
    "personal_data",
    is_flag=True,
    help="Show people in full: names, account numbers, ID numbers and phones, for those "
    "entitled to them (docs/personal-data.md). Without it they are masked.",
)
