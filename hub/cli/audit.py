"""`stophub audit`: the audit log read as evidence (signatures, verify, export, verify-export)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from hub.cli.common import (
    HubKeys,
    database_url_given,
    db_option,
    hub_key_option,
    json_option,
    open_store,
    personal_data_option,
    print_json,
    print_verification,
    refusals_as_errors,
    registered_hub_keys,
    the_group_database,
)
from hub.cli.exporting import export_options, run_export
from hub.service import auditlog, exports
from hub.service.auditlog import Verification
from hub.service.evidence import SignatureReport, verify_signatures
from hub.store import auditscan


@click.group("audit")
def audit() -> None:
    """The audit log, read as evidence."""


@audit.command("signatures")
@db_option
@refusals_as_errors
def audit_signatures(database_url: str) -> None:
    """Verify every signed envelope in the audit log with the key valid when it was recorded.

    Exits 1 and names each entry that does not verify."""
    report = verify_signatures(open_store(database_url))
    for (signer, key_id), count in sorted(report.by_key.items()):
        click.echo(f"{signer:<10} {key_id:<24} {count:>8} verified")
    for p in report.problems:
        click.echo(f"entry {p.entry_id} ({p.signer}/{p.message_id}): {p.why}", err=True)
    click.echo(f"{report.checked} signed messages checked, {len(report.problems)} problem(s)")
    if not report.ok:
        sys.exit(1)


@audit.command("verify")
@db_option
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
@refusals_as_errors
def audit_verify(
    database_url: str, quiet: bool, jobs: int | None, pure_python: bool, as_json: bool
) -> None:
    """Check the audit log as a Merkle tree (docs/audit.md): every entry against its leaf and
    its place, every hub-signed checkpoint's signature and root against the tree the entries
    make now, and every stored envelope's signature with the key valid when it was recorded.

    Exits 1 and names each entry changed, removed, inserted or moved, each checkpoint that no
    longer fits, and each envelope that does not verify."""
    store = open_store(database_url)
    keys = registered_hub_keys(store)
    result = auditlog.verify_store(
        store, keys.get, lambda: store.scan_audit(jobs, native=not pure_python)
    )
    if not as_json:  # the tree's findings first: a sealed value that fails below ends it
        print_verification(result)
        if not quiet:
            click.echo(f"entries hashed {auditscan.method(native=not pure_python)}")
        if not quiet and any(f.what == "unsequenced" for f in result.findings):
            click.echo("the waiting entries are placed by a running hub within a second")
    # The tree proves no entry changed; each entry's own envelope is checked too, with the
    # key its signer had when the hub recorded it.
    signatures = verify_signatures(store)
    if as_json:
        print_json(_verification_document(result, signatures))
    else:
        for p in signatures.problems:
            click.echo(
                f"SIGNATURE: entry {p.entry_id} ({p.signer}/{p.message_id}): {p.why}", err=True
            )
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


def _verification_document(result: Verification, signatures: SignatureReport) -> dict[str, Any]:
    """`audit verify --json` (docs/cli.md)."""
    return {
        "ok": result.ok and signatures.ok,
        "entries": result.entries,
        "tree_size": result.tree_size,
        "root": result.root.hex(),
        "checkpoints": result.checkpoints,
        "waiting": sum(f.what == "unsequenced" for f in result.findings),
        "placed_during": result.placed_during,
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
        "signatures": {
            "checked": signatures.checked,
            "problems": [
                {
                    "entry_id": p.entry_id,
                    "signer": p.signer,
                    "message_id": p.message_id,
                    "why": p.why,
                }
                for p in signatures.problems
            ],
        },
    }


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
@hub_key_option(
    required=False,
    help="A public key of the hub (PEM, or raw Ed25519), repeatable; else the registry's.",
)
@click.option(
    "--db",
    "database_url",
    default=the_group_database,
    callback=database_url_given,
    help="Read the hub's public keys from this database's registry (when no --hub-key).",
)
@refusals_as_errors
def audit_verify_export(export_file: str, hub_keys: HubKeys, database_url: str | None) -> None:
    """Check a full audit export offline as `stophub audit verify` checks the database: every
    entry against its leaf and place, every checkpoint's signature and root.

    Exits 1 and names each entry changed, removed, inserted or moved."""
    keys = hub_keys
    if not hub_keys:
        if database_url is None:
            raise click.UsageError("give the hub's public keys with --hub-key, or --db")
        store = open_store(database_url)
        try:
            keys = registered_hub_keys(store)
        finally:
            store.dispose()
    result = exports.verify_export(export_file, keys.get)
    print_verification(result)
    if not result.ok:
        sys.exit(1)
