"""`stophub listkey`: the network's list key, the HMAC key of the blacklist's TOKENS form
(docs/blacklist.md)."""

from __future__ import annotations

import click

from hub.cli.common import refusals_as_errors
from hub.crypto.listkey import DEFAULT_FILE as LIST_KEY_FILE
from hub.crypto.listkey import ENV_FILE as LIST_KEY_ENV_FILE
from hub.crypto.listkey import ENV_KEY as LIST_KEY_ENV
from hub.crypto.listkey import ListKey, ListKeyError, resolve_list_key


@click.group("listkey")
def listkey_group() -> None:
    """The network's list key: the HMAC key behind the tokens of the blacklist's TOKENS form.

    Members that keep a TOKENS copy hold it too, to compute their customers' tokens; it must
    not change while entries are listed."""


@listkey_group.command("generate")
@click.option(
    "--file",
    "path",
    default=LIST_KEY_FILE,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the key (mode 0600; never overwritten).",
)
@refusals_as_errors
def listkey_generate(path: str) -> None:
    """Create a new list key."""
    key = ListKey.generate()
    try:
        key.save(path)
    except ListKeyError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"list key {key.key_id} written to {path} (mode 0600)")


@listkey_group.command("show")
@click.option(
    "--file",
    "path",
    default=None,
    type=click.Path(dir_okay=False),
    help=f"The key file (default: ${LIST_KEY_ENV_FILE}, ${LIST_KEY_ENV} or {LIST_KEY_FILE}).",
)
def listkey_show(path: str | None) -> None:
    """Print the list key's id (never the key)."""
    try:
        key = resolve_list_key(path)
    except ListKeyError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"list key id {key.key_id}")
