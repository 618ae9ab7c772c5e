"""`stophub keys`: generate a signing key pair; add, revoke or rotate an institution's public
keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from hub.cli.common import CODE, KEY_ID, db_option, open_store, read_public_key, refusals_as_errors
from hub.crypto.keys import PrivateKey, save_private_key
from hub.crypto.public import public_key_to_pem
from hub.crypto.signing import ALGORITHMS, ED25519
from hub.service.admin import Registry
from hub.system.clock import SystemClock


@click.group("keys")
def keys() -> None:
    """Signing keys: generate a key pair, register or revoke a public key."""


@keys.command("generate")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The private key file, e.g. var/banka.key.",
)
@click.option(
    "--algorithm", type=click.Choice(sorted(ALGORITHMS)), default=ED25519, show_default=True
)
@refusals_as_errors
def keys_generate(out: str, algorithm: str) -> None:
    """Write a private key (PEM, mode 0600) to OUT and its public key (PEM) beside it, named
    as OUT with .pub for its suffix: `--out var/banka.key` writes var/banka.key and
    var/banka.pub. Neither file is ever overwritten."""
    pub = public_key_file(out)
    if pub.exists():
        raise click.ClickException(
            f"{pub} exists: keys are never overwritten; choose another --out"
        )
    key = PrivateKey.generate(algorithm)
    save_private_key(key, out)
    with pub.open("xb") as f:  # "x": a file made meanwhile is not overwritten either
        f.write(public_key_to_pem(key.algorithm, key.public_key))
    click.echo(f"private key {out}\npublic key  {pub}\nkey id      {key.key_id} ({key.algorithm})")


def public_key_file(out: str) -> Path:
    """Where `keys generate --out OUT` writes the public key: OUT with .pub for its suffix."""
    path = Path(out)
    if path.suffix == ".pub":
        raise click.BadParameter(
            f"{out} would be the public key's name: give the private key's, e.g. "
            f"{path.with_suffix('.key')}",
            param_hint="--out",
        )
    return path.with_suffix(".pub")


@keys.command("add")
@click.argument("code", type=CODE)
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False))
@db_option
@refusals_as_errors
def keys_add(code: str, key_file: str, database_url: str) -> None:
    """Register another public key for an institution (several may be active)."""
    key_id = Registry(open_store(database_url, write=True), SystemClock()).add_key(
        code, read_public_key(key_file)
    )
    click.echo(f"added key {key_id} to {code}")


@keys.command("revoke")
@click.argument("code", type=CODE)
@click.argument("key_id", type=KEY_ID)
@db_option
@refusals_as_errors
def keys_revoke(code: str, key_id: str, database_url: str) -> None:
    """Revoke a key at once: messages signed with it are refused from now on."""
    Registry(open_store(database_url, write=True), SystemClock()).revoke_key(code, key_id)
    click.echo(f"revoked key {key_id} of {code}")


@keys.command("rotate")
@click.argument("code", type=CODE)
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--overlap-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="How long the old keys keep signing after the new one is registered.",
)
@db_option
@refusals_as_errors
def keys_rotate(code: str, key_file: str, overlap_hours: float, database_url: str) -> None:
    """Register a new public key and retire the institution's other keys after an overlap.

    What the old keys signed before they were retired still verifies in the audit log."""
    key_id, retiring = Registry(open_store(database_url, write=True), SystemClock()).rotate_key(
        code, read_public_key(key_file), timedelta(hours=overlap_hours)
    )
    click.echo(
        f"{code} now signs with {key_id}; "
        + (", ".join(retiring) or "no other key")
        + f" retire(s) in {overlap_hours:g} h"
    )
