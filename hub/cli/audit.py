"""`stophub audit`: the audit log read as evidence (signatures, verify, export, verify-export)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from hub.cli.common import (
    HubKeys,
    db_option,
    json_option,
    one_line,
    open_store,
    personal_data_option,
    print_json,
    print_verification,
    read_hub_public_key,
    refusals_as_errors,
)
from hub.cli.exporting import export_options, run_export
from hub.crypto import checkpoint as checkpoint_file
from hub.crypto.checkpoint import CheckpointError, open_checkpoint
from hub.service import auditverify, exports, trust
from hub.service.auditverify import Verification
from hub.service.evidence import Problem, SignatureReport, verify_signatures
from hub.service.exports import ExportError
from hub.service.trust import TrustError
from hub.store import auditscan
from hub.store.sql import SqlStore

F = TypeVar("F", bound=Callable[..., Any])


@click.group("audit")
def audit() -> None:
    """The audit log, read as evidence."""


class CheckNotMade(click.ClickException):
    """The check could not be made (database, keys, kept checkpoints, data keys): exit 2, so
    that no one reads it as "found problems" (1) or "clean" (0)."""

    exit_code = 2


def checks(fn: F) -> F:
    """Every failure that keeps a check from being made becomes one line and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CheckNotMade, click.UsageError):
            raise
        except click.ClickException as err:
            raise CheckNotMade(err.format_message()) from err
        except (TrustError, ExportError) as err:
            raise CheckNotMade(" ".join(str(err).split())) from err
        except Exception as err:
            # The main group's one line for a database or file failure.
            line = one_line(err)
            if line is None:
                raise
            raise CheckNotMade(line) from err

    return wrapper  # type: ignore[return-value]


def _given_hub_keys(
    _ctx: click.Context, _param: click.Parameter, files: tuple[str, ...]
) -> HubKeys:
    try:
        return dict(read_hub_public_key(file) for file in files)
    except click.ClickException as err:
        raise CheckNotMade(err.format_message()) from err


def trusted_hub_keys(fn: F) -> F:
    """--hub-key FILE (required, repeatable): the hub's public keys the auditor trusts."""
    return click.option(
        "--hub-key",
        "hub_keys",
        required=True,
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        callback=_given_hub_keys,
        help="A public key of the hub (its .pub file, beside its private key), repeatable. "
        "Only these, and keys they endorsed (`stophub keys endorse-hub`), are trusted; never "
        "merely one the database's registry lists.",
    )(fn)


trusted_checkpoint_option = click.option(
    "--trusted-checkpoint",
    "kept",
    multiple=True,
    type=click.Path(exists=True),
    help="A checkpoint kept earlier (`stophub audit checkpoint --out`), or a directory of "
    "them (*.json), repeatable: the log must still hold each one (else ROLLBACK or FORK).",
)


def _store_trust(store: SqlStore, given: HubKeys) -> trust.TrustedKeys:
    with store(read_only=True) as uow:
        return trust.trusted_keys(given, uow.audit.endorsements())


@audit.command("signatures")
@db_option
@refusals_as_errors
def audit_signatures(database_url: str) -> None:
    """Verify every signed envelope in the audit log with the key valid when it was recorded.

    Exits 1 and names each entry that does not verify or does not open (UNREADABLE)."""
    report = verify_signatures(open_store(database_url))
    for (signer, key_id), count in sorted(report.by_key.items()):
        click.echo(f"{signer:<10} {key_id:<24} {count:>8} verified")
    for p in report.problems:
        click.echo(_problem_line(p), err=True)
    click.echo(f"{report.checked} signed messages checked, {len(report.problems)} problem(s)")
    if not report.ok:
        sys.exit(1)


def _problem_line(p: Problem) -> str:
    if p.unreadable:
        return f"UNREADABLE: entry {p.entry_id}: {p.why}"
    return f"SIGNATURE: entry {p.entry_id} ({p.signer}/{p.message_id}): {p.why}"


@audit.command("verify")
@db_option
@trusted_hub_keys
@trusted_checkpoint_option
@click.option("--quiet", is_flag=True, help="Only the summary and the problems.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes that read and hash the entries (default: one per core, at most 8).",
)
@click.option(
    "--pure-python",
    is_flag=True,
    help="Hash every entry in Python, without the C accelerator (ADR 18): slower, the same "
    "findings.",
)
@json_option
@checks
def audit_verify(
    database_url: str,
    hub_keys: HubKeys,
    kept: tuple[str, ...],
    quiet: bool,
    jobs: int | None,
    pure_python: bool,
    as_json: bool,
) -> None:
    """Check the audit log as a Merkle tree (docs/audit.md) with trust anchored outside the
    database: every entry against its leaf and its place, every checkpoint's signature
    under the hub keys given (or endorsed by them) and its root against the tree the entries
    make now, each kept checkpoint against the tree, and every stored envelope's signature
    with the key valid when it was recorded.

    Exits 0 when all holds, 1 on any finding (each named), 2 when the check could not be
    made (the database, a key or kept checkpoint file, the data keys)."""
    store = open_store(database_url)
    keys = _store_trust(store, hub_keys)
    kept_checkpoints = trust.kept_checkpoints(kept, keys.get)
    result = auditverify.verify_store(
        store,
        keys.get,
        lambda: store.scan_audit(jobs, native=not pure_python),
        kept=kept_checkpoints,
    )
    result.findings[:0] = keys.findings
    # The tree proves no entry changed; each entry's own envelope is checked too, with the
    # key its signer had when the hub recorded it.
    signatures = verify_signatures(store)
    if as_json:
        print_json(_verification_document(result, signatures, keys))
    else:
        print_verification(result)
        if not quiet:
            click.echo(f"entries hashed {auditscan.method(native=not pure_python)}")
            if keys.endorsed:
                click.echo(f"hub key(s) trusted by endorsement: {', '.join(keys.endorsed)}")
        if not quiet and any(f.what == "unsequenced" for f in result.findings):
            click.echo("the waiting entries are placed by a running hub within a second")
        for p in signatures.problems:
            click.echo(_problem_line(p), err=True)
        click.echo(
            f"{signatures.checked} signed envelope(s) verified with the key valid when "
            f"recorded, {len(signatures.problems)} problem(s)"
        )
    if not result.ok or not signatures.ok:
        sys.exit(1)


# An entry is evidence only as its leaf hashes it: it cannot be masked (docs/personal-data.md).
PERSONAL_EXPORT = (
    "the audit export holds personal data in clear (the names, ID numbers and phones in the "
    "signed messages), which cannot be masked without breaking the evidence; add "
    "--personal-data if you are entitled to it (docs/personal-data.md)"
)


def _verification_document(
    result: Verification, signatures: SignatureReport | None, keys: trust.TrustedKeys
) -> dict[str, Any]:
    """`audit verify --json` and `audit verify-export --json` (docs/cli.md)."""
    document: dict[str, Any] = {
        "ok": result.ok and (signatures is None or signatures.ok),
        "entries": result.entries,
        "tree_size": result.tree_size,
        "root": result.root.hex(),
        "checkpoints": result.checkpoints,
        "checkpoints_failed": result.checkpoints_failed,
        "uncovered": result.uncovered,
        "waiting": sum(f.what == "unsequenced" for f in result.findings),
        "placed_during": result.placed_during,
        "hub_keys": {"given_or_endorsed": sorted(keys.keys), "endorsed": keys.endorsed},
        "kept": [
            {
                "source": k.source,
                "tree_size": k.tree_size,
                "root": k.root.hex(),
                "outcome": k.outcome,
            }
            for k in result.kept
        ],
        "problems": [
            {
                "what": f.what,
                "entry_id": f.entry_id,
                "log_index": f.log_index,
                "detail": f.detail,
            }
            for f in result.findings
            if f.what != "unsequenced"
        ],
    }
    if signatures is not None:
        document["signatures"] = {
            "checked": signatures.checked,
            "problems": [
                {
                    "entry_id": p.entry_id,
                    "signer": p.signer,
                    "message_id": p.message_id,
                    "why": p.why,
                    "unreadable": p.unreadable,
                }
                for p in signatures.problems
            ],
        }
    return document


@audit.command("export")
@export_options
@personal_data_option
@refusals_as_errors
def audit_export(
    database_url: str,
    fmt: str,
    out: str,
    case_id: str | None,
    institution: str | None,
    start: datetime | None,
    end: datetime | None,
    personal_data: bool,
) -> None:
    """Export audit entries, in id order, as CSV or JSON Lines.

    --institution keeps the entries it is the actor of and those of the cases it reported or
    has an order addressed to. A JSON Lines export without filters also holds the log's state
    and signed checkpoints: `stophub audit verify-export` checks it offline. The entries hold
    personal data in clear, as signed: the export needs --personal-data."""
    if not personal_data:
        raise click.ClickException(PERSONAL_EXPORT)
    count = run_export(
        exports.export_audit,
        database_url,
        out,
        fmt,
        "audit entries",
        case_id,
        institution,
        start,
        end,
    )
    if out != "-":
        click.echo(f"{count} audit entr(ies) written to {out}", err=True)


@audit.command("verify-export")
@click.option(
    "--export",
    "export_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A full JSON Lines audit export (`stophub audit export --format jsonl`).",
)
@trusted_hub_keys
@trusted_checkpoint_option
@json_option
@checks
def audit_verify_export(
    export_file: str, hub_keys: HubKeys, kept: tuple[str, ...], as_json: bool
) -> None:
    """Check a full audit export offline as `stophub audit verify` checks the database: every
    entry against its leaf, place and payload SHA-256, every checkpoint's signature (under
    the keys given, or endorsed in the export by them) and root, the state line, and each
    kept checkpoint.

    Exits 0 when all holds, 1 on any finding (each named), 2 when the check could not be
    made."""
    result, keys = exports.verify_export(export_file, hub_keys, kept)
    if as_json:
        print_json(_verification_document(result, None, keys))
    else:
        print_verification(result)
        if keys.endorsed:
            click.echo(f"hub key(s) trusted by endorsement: {', '.join(keys.endorsed)}")
    if not result.ok:
        sys.exit(1)


@audit.command("checkpoint")
@db_option
@trusted_hub_keys
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="The file to keep it in (never overwritten), or a directory (existing, or named with "
    "a final /): then DIR/checkpoint-<size>.json.",
)
@checks
def audit_checkpoint(database_url: str, hub_keys: HubKeys, out: str) -> None:
    """Keep the newest signed checkpoint of the audit log in a file, verified first with the
    hub keys given (or endorsed by them). Give it to `audit verify --trusted-checkpoint`
    later: the log must still hold it.

    Exits 1 when the newest stored checkpoint is not signed by a trusted key (nothing is
    written), 2 when there is none yet or the file exists with another checkpoint."""
    store = open_store(database_url)
    keys = _store_trust(store, hub_keys)
    with store(read_only=True) as uow:
        stored = list(uow.audit.checkpoints())
    if not stored:
        raise CheckNotMade(
            "the audit log has no signed checkpoint yet: the hub signs one each minute the log grew"
        )
    newest = stored[-1]
    try:
        signed = open_checkpoint(newest.envelope, keys.get)
    except CheckpointError as e:
        click.echo(
            f"CHECKPOINT: the newest stored checkpoint ({newest.tree_size} entries): {e}; "
            "nothing written",
            err=True,
        )
        sys.exit(1)
    path = Path(out)
    if path.is_dir() or out.endswith("/"):  # a collection: one file per checkpoint
        path.mkdir(parents=True, exist_ok=True)
        path = path / f"checkpoint-{signed.tree_size:012d}.json"
    text = checkpoint_file.dump(signed)
    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            click.echo(f"{path} already keeps the checkpoint of {signed.tree_size} entries")
            return
        raise CheckNotMade(
            f"{path} exists and keeps another checkpoint: it is never "
            "overwritten; give a new name or a directory"
        )
    with path.open("x", encoding="utf-8") as f:
        f.write(text)
    click.echo(
        f"kept the checkpoint of {signed.tree_size} entries (root {signed.root_hash.hex()}, "
        f"signed {signed.checkpoint_time.isoformat()} with hub key {signed.key_id}) in {path}"
    )
