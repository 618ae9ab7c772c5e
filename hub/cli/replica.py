"""`stophub replica`: a member's copy of the blacklist, exact to the hub's signed checkpoints
(docs/blacklist.md)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click

from adapters.blacklist import Form, Replica, ReplicaError, ReplicaEvent
from adapters.sdk import HubClient, HubError, HubSignatureError
from hub.cli.common import (
    CODE,
    HubKeys,
    command_clock,
    hub_key_option,
    hub_targets,
    refusals_as_errors,
    tls_dir_option,
)
from hub.crypto import pki
from hub.crypto.keys import load_private_key
from hub.crypto.listkey import DEFAULT_FILE as LIST_KEY_FILE
from hub.crypto.listkey import ENV_FILE as LIST_KEY_ENV_FILE
from hub.crypto.listkey import ENV_KEY as LIST_KEY_ENV
from hub.crypto.listkey import ListKeyError, resolve_list_key


@click.command("replica")
@click.option(
    "--hub",
    "target",
    required=True,
    callback=hub_targets,
    metavar="HOST:PORT[,...]",
    help="The hub's address, HOST:PORT, or its replicas comma-separated (docs/failover.md).",
)
@click.option("--institution", required=True, type=CODE, help="This member's code, e.g. PAYX.")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="This member's private signing key.",
)
@hub_key_option(
    required=True,
    help="The hub's public key (PEM or raw); repeat it while the hub rotates its key.",
)
@tls_dir_option(
    "--tls-dir",
    help=f"Mutual TLS: {pki.CA_CERT} and this member's <code>-tls.pem / <code>-tls.key "
    "(`stophub pki issue CODE`).",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="Development only: reach a hub serving plain text, without TLS.",
)
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The copy's SQLite file (created if missing).",
)
@click.option(
    "--form",
    type=click.Choice(["clear", "tokens"]),
    default="clear",
    show_default=True,
    help="clear: numbers and names; tokens: keyed hashes only (needs the list key).",
)
@click.option(
    "--list-key",
    "list_key_file",
    default=None,
    type=click.Path(dir_okay=False),
    help=f"The network's list key, for --form tokens (default: ${LIST_KEY_ENV_FILE}, "
    f"${LIST_KEY_ENV} or {LIST_KEY_FILE}).",
)
@click.option("--once", is_flag=True, help="Sync once, print the copy's state and exit.")
@refusals_as_errors
def replica_command(
    target: str,
    institution: str,
    key_file: str,
    hub_keys: HubKeys,
    tls_dir: str,
    insecure_plaintext: bool,
    db_path: str,
    form: str,
    list_key_file: str | None,
    once: bool,
) -> None:
    """Keep a local copy of the blacklist and punishment list, exact to the hub's signed
    checkpoints: follow the hub's changes and print each checkpoint, or sync `--once`.

    Exits 1, keeping the last good copy, when a copy is refused (its digest, count or
    signature differ from the hub's checkpoint) or the hub refuses the sync."""
    list_key = None
    if form == Form.TOKENS:
        try:
            list_key = resolve_list_key(list_key_file)
        except ListKeyError as err:
            raise click.ClickException(str(err)) from err
    tls = None if insecure_plaintext else pki.client_tls(Path(tls_dir), institution)
    clock = command_clock()

    def report(event: ReplicaEvent) -> None:
        if event.kind == "checkpoint":
            click.echo(event.status.line())
        elif event.kind == "refused":
            click.echo(f"refused: {event.error}", err=True)
        elif event.retry_in is not None:
            click.echo(f"{event.error}; syncing again in {event.retry_in:.1f} s", err=True)

    async def run() -> None:
        client = HubClient(
            target,
            institution=institution,
            key=load_private_key(key_file),
            hub_public_key=list(hub_keys.values()),
            clock=clock,
            tls=tls,
        )
        try:
            with Replica(db_path, client, Form(form), list_key=list_key, clock=clock) as copy:
                if once:
                    click.echo(
                        f"{copy.path}: {copy.form.value} copy at version {copy.version}, "
                        f"syncing from {target}",
                        err=True,
                    )
                    click.echo((await copy.sync_once()).line())
                    return
                copy.on_event = report
                click.echo(f"{copy.path}: {copy.status().line()}; following {target}", err=True)
                following = asyncio.create_task(copy.run(follow=True))
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for task in (following, stopping):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following  # a refusal no retry cures is raised here
        finally:
            await client.close()

    try:
        asyncio.run(run())
    except (ReplicaError, HubError, HubSignatureError) as err:
        raise click.ClickException(f"the copy in {db_path} was not updated: {err}") from err
