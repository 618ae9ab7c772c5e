"""What every `stophub` command module shares: the database option, refusals as one-line
errors, and how a verification of the audit log is printed. Kept apart from hub/cli.py so the
command modules it registers (hub/report_cli.py, hub/export_cli.py) import it without a cycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from hub import bootstrap
from hub.crypto import pki
from hub.crypto.signing import SignatureError
from hub.domain.errors import DomainError
from hub.service.auditlog import Verification
from hub.service.exports import ExportError

F = TypeVar("F", bound=Callable[..., Any])

db_option = click.option(
    "--db",
    "database_url",
    default=lambda: os.environ.get("STOPHUB_DATABASE_URL", bootstrap.DEFAULT_DATABASE),
    show_default="$STOPHUB_DATABASE_URL or " + bootstrap.DEFAULT_DATABASE,
    help="Database URL: sqlite:///path/to/file.db or postgresql://user@host/db.",
)


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
