"""`stophub datakeys`: the data keys that seal personal data at rest (ADR 9)."""

from __future__ import annotations

import click
from sqlalchemy import Engine, func, select

from hub import bootstrap
from hub.cli.common import db_option, keyring_file, open_store, refusals_as_errors, use_data_keys
from hub.crypto import fields
from hub.store.sql import make_engine
from hub.store.tables import audit_log, sealed_tables

file_option = click.option(
    "--file",
    default=None,
    type=click.Path(dir_okay=False),
    help=f"The keyring file (default: --data-keys, ${fields.ENV_FILE} or {fields.DEFAULT_FILE}).",
)


@click.group("datakeys")
def datakeys() -> None:
    """Data keys that seal names, ID numbers, phones and stored envelopes (ADR 9).

    Rotation while hubs run: `generate` a key into the shared keyring file, `rotate` to make
    it current, send SIGHUP to each `stophub serve` (or let them pick it up when they meet
    it), then `reencrypt`; `status` shows which keys the stored values still use. The cipher
    (AES-256-GCM or SM4-GCM) is the current key's: `generate --cipher sm4-gcm --make-current`
    then `reencrypt` moves every value to SM4-GCM, and the same with aes-256-gcm moves back."""


@datakeys.command("generate")
@file_option
@click.option("--make-current", is_flag=True, help="Seal with the new key from now on.")
@click.option(
    "--cipher",
    type=click.Choice(list(fields.CIPHERS)),
    default=fields.AES_256_GCM,
    show_default=True,
    help="The new key's cipher: 256-bit AES-GCM, or 128-bit SM4-GCM (GB/T 32907).",
)
@refusals_as_errors
def datakeys_generate(file: str | None, make_current: bool, cipher: str) -> None:
    """Add a new key to the keyring file (created, mode 0600, if missing; its first key is
    current)."""
    path = keyring_file(file)
    try:
        fresh = fields.Keyring.generate(cipher=cipher)
        if path.exists():
            ring = fields.load_keyring_file(path).with_key(
                fresh.current, fresh.keys[fresh.current], make_current=make_current, cipher=cipher
            )
        else:
            ring = fresh
        ring.save(path)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    state = "current" if ring.current == fresh.current else f"not current ({ring.current} is)"
    click.echo(
        f"data key {fresh.current} ({cipher}) added to {path}: {state}, {len(ring.keys)} key(s)"
    )


@datakeys.command("rotate")
@file_option
@refusals_as_errors
def datakeys_rotate(file: str | None) -> None:
    """Make the newest key current (new values are sealed with it)."""
    path = keyring_file(file)
    try:
        ring = fields.load_keyring_file(path)
        newest = ring.order[-1]
        if newest != ring.current:
            ring.with_current(newest).save(path)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    click.echo(
        f"current data key: {newest}, {ring.ciphers[newest]} (was {ring.current}, "
        f"{ring.cipher}). Send SIGHUP to running hubs, then run `stophub datakeys reencrypt`."
    )


def _sealed_engine(database_url: str, file: str | None) -> tuple[fields.Keyring, Engine]:
    ring = use_data_keys(file)
    bootstrap.migrate(database_url)
    return ring, make_engine(database_url)


@datakeys.command("reencrypt")
@file_option
@db_option
@click.option("--batch", default=500, show_default=True, type=click.IntRange(min=1))
@refusals_as_errors
def datakeys_reencrypt(file: str | None, database_url: str, batch: int) -> None:
    """Re-seal every stored value under the current key, a batch per transaction: safe
    while hubs serve, and a second run finds nothing left to do."""
    ring, engine = _sealed_engine(database_url, file)
    try:
        with engine.connect() as conn:
            done = fields.reencrypt(conn, sealed_tables(), ring, batch=batch)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    finally:
        engine.dispose()
    for name, counts in done.items():
        click.echo(f"{name:<20} {counts.rows:>8} rows  {counts.values:>8} values re-sealed")
    total = sum(c.values for c in done.values())
    raced = sum(c.raced for c in done.values())
    click.echo(f"{total} value(s) re-sealed under {ring.current} ({ring.cipher})")
    if raced:
        click.echo(f"{raced} value(s) changed meanwhile and were left: run it again")


@datakeys.command("status")
@file_option
@db_option
@refusals_as_errors
def datakeys_status(file: str | None, database_url: str) -> None:
    """Stored values per data key id, per table; keys the keyring lacks are flagged.
    Reads the database, read-only; never migrates it."""
    store = open_store(database_url, keyring=file)
    try:
        ring = fields.keyring()
        with store.engine.connect() as conn:
            usage = fields.key_usage(conn, sealed_tables())
            tags = conn.execute(
                select(audit_log.c.tag_key, func.count())
                .where(audit_log.c.tag_key.is_not(None))
                .group_by(audit_log.c.tag_key)
                .order_by(audit_log.c.tag_key)
            ).all()
    finally:
        store.dispose()
    totals: dict[str, int] = {}
    for name, counts in usage.items():
        for kid, n in sorted(counts.items()):
            totals[kid] = totals.get(kid, 0) + n
            click.echo(f"{name:<20} {kid:<16} {n:>8}")
    listed = ", ".join(f"{kid} ({ring.ciphers[kid]})" for kid in ring.order)
    click.echo(f"keyring: {listed}; current {ring.current}")
    for kid, n in sorted(totals.items()):
        note = (
            " (current)"
            if kid == ring.current
            else ("" if kid in ring.keys else " (NOT IN THE KEYRING)")
        )
        click.echo(f"total {kid:<16} {n:>8}{note}")
    # Re-encryption never moves the hub's tags on audit entries to the new key: a key they
    # name must stay in the keyring, or `audit verify` cannot check those entries.
    for kid, n in tags:
        note = " (NOT IN THE KEYRING: they cannot be verified)" if kid not in ring.keys else ""
        click.echo(f"audit tags under {kid:<16} {n:>8}{note}")
