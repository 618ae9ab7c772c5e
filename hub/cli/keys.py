"""`stophub keys`: generate a signing key pair; add, revoke or rotate an institution's public
keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from hub.cli.common import CODE, KEY_ID, db_option, open_store, read_public_key, refusals_as_errors
from hub.crypto.keys import ALIASES, PrivateKey, save_private_key
from hub.crypto.pkcs11 import Pkcs11Config, Pkcs11Error, generate_key
from hub.crypto.public import public_key_from_file, public_key_to_pem, with_distinguishing_id
from hub.crypto.signer import Signer, SignerError, is_pkcs11, load_signer
from hub.crypto.signing import ALGORITHMS, ED25519, SignatureError
from hub.domain.institutions import HUB_CODE
from hub.service import trust
from hub.service.admin import NewKey, Registry
from hub.system.clock import SystemClock


@click.group("keys")
def keys() -> None:
    """Signing keys: generate a key pair, register or revoke a public key."""


@keys.command("generate")
@click.option(
    "--out",
    required=True,
    help="The private key file, e.g. var/banka.key; or a pkcs11: URI naming the token and "
    "the new key's label (docs/signing-keys.md): the key is made in the token and never "
    "leaves it.",
)
@click.option(
    "--algorithm",
    type=click.Choice(sorted(ALGORITHMS | set(ALIASES))),
    default=ED25519,
    show_default=True,
    help="sm2 is sm2-sm3, p256 is ecdsa-p256-sha256.",
)
@click.option(
    "--pub",
    "pub_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where the public key goes (default: OUT with .pub for its suffix; required with a "
    "pkcs11: URI).",
)
@refusals_as_errors
def keys_generate(out: str, algorithm: str, pub_file: str | None) -> None:
    """Write a private key (PEM, mode 0600) to OUT and its public key (PEM) beside it, named
    as OUT with .pub for its suffix: `--out var/banka.key` writes var/banka.key and
    var/banka.pub. Neither file is ever overwritten. With a pkcs11: URI as OUT the key pair
    is made in the token, sensitive and not extractable, and only the public key is
    written (to --pub)."""
    if is_pkcs11(out) and pub_file is None:
        raise click.BadParameter(
            "a key made in a PKCS#11 token needs --pub FILE for its public key", param_hint="--pub"
        )
    pub = Path(pub_file) if pub_file else public_key_file(out)
    if pub.exists():
        raise click.ClickException(f"{pub} exists: keys are never overwritten; choose another")
    key: Signer
    if is_pkcs11(out):
        try:
            key = generate_key(Pkcs11Config.from_uri(out), ALIASES.get(algorithm, algorithm))
        except Pkcs11Error as err:
            raise click.ClickException(str(err)) from err
        where = f"in token {key.config.token!r}, labelled {key.config.key!r} (not extractable)"
    else:
        try:
            key = PrivateKey.generate(algorithm)
        except SignatureError as err:  # sm2-sm3 where this machine's OpenSSL has no SM2
            raise click.ClickException(str(err)) from err
        save_private_key(key, out)
        where = out
    with pub.open("xb") as f:  # "x": a file made meanwhile is not overwritten either
        f.write(public_key_to_pem(key.algorithm, key.public_key))
    click.echo(
        f"private key {where}\npublic key  {pub}\nkey id      {key.key_id} ({key.algorithm})"
    )


@keys.command("public")
@click.argument("key")
@refusals_as_errors
def keys_public(key: str) -> None:
    """Print the public key (PEM) and key id of a signing key: a private key file, or a key in
    a PKCS#11 token named by a pkcs11: URI (what `keys add` and `institution add` register)."""
    try:
        signer = load_signer(key)
    except SignerError as err:
        raise click.ClickException(str(err)) from err
    click.echo(public_key_to_pem(signer.algorithm, signer.public_key).decode("ascii"), nl=False)
    click.echo(f"key id {signer.key_id} ({signer.algorithm})", err=True)


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


DISTINGUISHING_ID = click.option(
    "--distinguishing-id",
    metavar="TEXT",
    help="SM2 keys only: the signer's distinguishing ID (UTF-8, 1-128 bytes) when it is not "
    "the default 1234567812345678.",
)


def _key(key_file: str, distinguishing_id: str | None) -> NewKey:
    key = read_public_key(key_file)
    try:
        return NewKey(
            key.algorithm, with_distinguishing_id(key.algorithm, key.public_key, distinguishing_id)
        )
    except SignatureError as err:
        raise click.BadParameter(str(err), param_hint="--distinguishing-id") from err


@keys.command("add")
@click.argument("code", type=CODE)
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False))
@DISTINGUISHING_ID
@db_option
@refusals_as_errors
def keys_add(code: str, key_file: str, distinguishing_id: str | None, database_url: str) -> None:
    """Register another public key for an institution (several may be active)."""
    key_id = Registry(open_store(database_url, write=True), SystemClock()).add_key(
        code, _key(key_file, distinguishing_id)
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
@DISTINGUISHING_ID
@db_option
@refusals_as_errors
def keys_rotate(
    code: str,
    key_file: str,
    overlap_hours: float,
    distinguishing_id: str | None,
    database_url: str,
) -> None:
    """Register a new public key and retire the institution's other keys after an overlap.

    What the old keys signed before they were retired still verifies in the audit log."""
    key_id, retiring = Registry(open_store(database_url, write=True), SystemClock()).rotate_key(
        code, _key(key_file, distinguishing_id), timedelta(hours=overlap_hours)
    )
    click.echo(
        f"{code} now signs with {key_id}; "
        + (", ".join(retiring) or "no other key")
        + f" retire(s) in {overlap_hours:g} h"
    )


@keys.command("endorse-hub")
@click.option(
    "--old",
    "old_file",
    required=True,
    help="The hub's current private key (PEM), or its pkcs11: URI, which vouches for the new one.",
)
@click.option(
    "--new",
    "new_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The hub's new key: its public key (.pub) or its private key (PEM).",
)
@db_option
@refusals_as_errors
def keys_endorse_hub(old_file: str, new_file: str, database_url: str) -> None:
    """Have the hub's old key sign its new one (a HubKeyEndorsement, kept in the database and
    in every full audit export), so that auditors who trust the old key trust the new one
    (docs/audit.md, "Rotating the hub's key"). Run it before the hub first signs with the
    new key. Refuses an old key the registry does not list as the hub's, and a new key
    already endorsed otherwise; endorsing the same key again changes nothing."""
    try:
        old = load_signer(old_file)
    except SignerError as err:
        raise click.ClickException(str(err)) from err
    algorithm, public = _new_hub_key(new_file)
    store = open_store(database_url, write=True)
    try:
        with store(read_only=True) as uow:
            hub = uow.institutions.get(HUB_CODE)
            endorsed = {e.key_id: e for e in uow.audit.endorsements()}
        if hub is None or hub.key(old.key_id) is None:
            raise click.ClickException(
                f"{old_file}: key {old.key_id} is not one of the hub's in this database's "
                "registry: give the key the hub signs with now"
            )
        row = trust.endorse(old, algorithm, public, SystemClock().now())
        if row.key_id == old.key_id:
            raise click.ClickException("--old and --new are the same key")
        before = endorsed.get(row.key_id)
        if before is not None:
            said = trust.read_endorsement(before.envelope)
            if (said.endorsed_by, said.public_key) == (old.key_id, public):
                click.echo(f"hub key {row.key_id} is already endorsed by {old.key_id}")
                return
            raise click.ClickException(
                f"hub key {row.key_id} is already endorsed by {before.endorsed_by}: an "
                "endorsement is never replaced"
            )
        with store() as uow:
            uow.audit.add_endorsement(row)
            uow.commit()
    finally:
        store.dispose()
    click.echo(f"hub key {row.key_id} ({algorithm}) endorsed by hub key {old.key_id}")


def _new_hub_key(path: str) -> tuple[str, bytes]:
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        key = PrivateKey.from_pem(data)
        return key.algorithm, key.public_key
    try:
        return public_key_from_file(data)
    except SignatureError as err:
        raise click.ClickException(f"{path}: {' '.join(str(err).split())}") from err
