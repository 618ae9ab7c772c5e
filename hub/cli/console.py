"""`stophub console`: the duty desk (adapters/console), set up, served, and its people kept."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import uvicorn
from sqlalchemy import select, update

from adapters.console.app import create_app
from adapters.console.config import ConfigError, ConsoleConfig, load_config, write_config
from adapters.console.db import ConsoleDb, DatabaseError
from adapters.console.models import Person, Session
from adapters.console.people import (
    PeopleError,
    Role,
    add_person,
    find,
    new_totp_secret,
    set_password,
    totp_uri,
)
from adapters.sdk.identity import IdentityError, load_identity
from hub.render.wording import set_display_zone
from hub.system.clock import SystemClock

CONFIG_ENV = "STOPHUB_CONSOLE_CONFIG"


def config_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--config",
        "config_path",
        default=lambda: os.environ.get(CONFIG_ENV, "console.toml"),
        show_default=f"${CONFIG_ENV} or console.toml",
        type=click.Path(dir_okay=False),
        help="The console's configuration file (`stophub console init` writes one).",
    )(fn)


def _config(path: str) -> ConsoleConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from err


def _db(config: ConsoleConfig) -> ConsoleDb:
    db = ConsoleDb(config.database_url)
    try:
        db.migrate()
    except DatabaseError as err:
        raise click.ClickException(str(err)) from err
    return db


@click.group("console")
def console_group() -> None:
    """The duty desk: a web console at one institution, speaking to the hub over gRPC."""


@console_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--identity",
    required=True,
    type=click.Path(file_okay=False),
    help="The institution's identity directory (docs/console.md): key, TLS pair, hub.pub.",
)
@click.option("--hub", "hub", default=None, help="The hub's address, HOST:PORT.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(1, 65535))
@click.option("--language", default="zh", show_default=True, type=click.Choice(["zh", "en"]))
def console_init(directory: str, identity: str, hub: str | None, port: int, language: str) -> None:
    """Make DIR/console.toml and the console's database for the identity in --identity."""
    try:
        found = load_identity(identity, hub=hub)
    except IdentityError as err:
        raise click.ClickException(str(err)) from err
    target = Path(directory) / "console.toml"
    try:
        config = write_config(
            target,
            Path(identity).resolve(),
            hub=hub or found.hub,
            port=port,
            language=language,
        )
    except ConfigError as err:
        raise click.ClickException(str(err)) from err
    _db(config).dispose()
    click.echo(
        f"console for {found.institution}: {target}\n"
        f"next: stophub console user add NAME --role supervisor --config {target}\n"
        f"then: stophub console serve --config {target}"
    )


@console_group.command("serve")
@config_option
@click.option("--no-stream", is_flag=True, help="Do not hold the delivery stream (read only).")
def console_serve(config_path: str, no_stream: bool) -> None:
    """Serve the console until interrupted."""
    config = _config(config_path)
    clock = SystemClock()
    # The pictures hub/render draws for the pages (the money trail) name times in the
    # console's zone: one zone per process, this console's.
    set_display_zone(ZoneInfo(config.time_zone))
    try:
        identity = load_identity(config.identity, hub=config.hub)
    except IdentityError as err:
        raise click.ClickException(str(err)) from err
    target = config.hub or identity.hub
    if not target:
        raise click.ClickException(
            f'{config.path}: say where the hub is (hub = "HOST:PORT") or in identity.toml'
        )
    scheme = "https" if config.tls_cert else "http"

    async def run() -> None:
        # The SDK's channel belongs to the loop it is made in: make it in the server's.
        client = identity.client(target, clock=clock)
        app = create_app(config, client, clock, stream=not no_stream)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
                ssl_keyfile=str(config.tls_key) if config.tls_key else None,
                log_level="warning",
                access_log=False,
            )
        )
        click.echo(
            f"console for {identity.institution} at {scheme}://{config.host}:{config.port}/ "
            f"(hub {target}); Ctrl-C stops it",
            err=True,
        )
        await server.serve()
        if not server.started:
            raise click.ClickException(
                f"cannot listen on {config.host}:{config.port}: the port is in use or not "
                "allowed; choose another port in console.toml"
            )

    try:
        asyncio.run(run())
    except DatabaseError as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt:
        pass


@console_group.group("user")
def user_group() -> None:
    """The people who may sign in to this console."""


def _new_password() -> str:
    return secrets.token_urlsafe(12)


@user_group.command("add")
@click.argument("username")
@config_option
@click.option(
    "--role",
    required=True,
    type=click.Choice([r.value for r in Role]),
    help="officer acts; supervisor also approves others' proposals; viewer reads only.",
)
@click.option("--name", "display_name", default="", help="The person's name as pages show it.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input; otherwise one is made and printed, "
    "to be changed at first sign-in.",
)
@click.option("--totp", is_flag=True, help="Require a code from an authenticator app too.")
@click.option("--language", default=None, type=click.Choice(["zh", "en"]))
def user_add(
    username: str,
    config_path: str,
    role: str,
    display_name: str,
    password_stdin: bool,
    totp: bool,
    language: str | None,
) -> None:
    """Add a person who may sign in."""
    config = _config(config_path)
    db = _db(config)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else _new_password()
    identity_code = _institution(config)
    try:
        with db() as s:
            person = add_person(
                s,
                username,
                display_name,
                Role(role),
                password,
                SystemClock().now(),
                language=language or config.language,
                totp=totp,
            )
            person.must_change_password = not password_stdin
            secret = person.totp_secret
            uri = totp_uri(person.username, identity_code, secret) if secret else ""
            name = person.username
    except PeopleError as err:
        raise click.ClickException(str(err)) from err
    finally:
        db.dispose()
    click.echo(f"added {name} ({role})")
    if not password_stdin:
        click.echo(f"password (to change at first sign-in): {password}")
    if uri:
        click.echo(f"authenticator: {uri}")


def _institution(config: ConsoleConfig) -> str:
    try:
        return load_identity(config.identity).institution
    except IdentityError:
        return "console"


@user_group.command("list")
@config_option
def user_list(config_path: str) -> None:
    """Everyone who may sign in, with their role and state."""
    config = _config(config_path)
    db = _db(config)
    now = SystemClock().now()
    with db() as s:
        rows = list(s.scalars(select(Person).order_by(Person.username)))
        click.echo(f"{'user':<20} {'role':<11} {'2FA':<4} {'state':<22} name")
        for p in rows:
            state = (
                "disabled"
                if p.disabled
                else f"locked until {p.locked_until:%H:%M}Z"
                if p.locked_until and p.locked_until > now
                else "must change password"
                if p.must_change_password
                else "active"
            )
            click.echo(
                f"{p.username:<20} {p.role:<11} {'yes' if p.totp_secret else 'no':<4} "
                f"{state:<22} {p.display_name}"
            )
    db.dispose()


@user_group.command("disable")
@click.argument("username")
@config_option
def user_disable(username: str, config_path: str) -> None:
    """Stop a person signing in, and end their open sessions now."""
    config = _config(config_path)
    db = _db(config)
    with db() as s:
        person = find(s, username)
        if person is None:
            raise click.ClickException(f"{username}: no such person (see `console user list`)")
        person.disabled = True
        s.execute(update(Session).where(Session.person_id == person.id).values(ended=True))
    db.dispose()
    click.echo(f"disabled {username}; their sessions are ended")


@user_group.command("reset")
@click.argument("username")
@config_option
@click.option("--totp", is_flag=True, help="Also give them a new authenticator secret.")
@click.option("--enable", is_flag=True, help="Also enable a disabled account.")
def user_reset(username: str, config_path: str, totp: bool, enable: bool) -> None:
    """A new one-time password (changed at next sign-in); unlocks a locked account."""
    config = _config(config_path)
    db = _db(config)
    password = _new_password()
    with db() as s:
        person = find(s, username)
        if person is None:
            raise click.ClickException(f"{username}: no such person (see `console user list`)")
        set_password(person, password, must_change=True)
        uri = ""
        if totp:
            person.totp_secret = new_totp_secret()
            uri = totp_uri(person.username, _institution(config), person.totp_secret)
        if enable:
            person.disabled = False
        s.execute(update(Session).where(Session.person_id == person.id).values(ended=True))
    db.dispose()
    click.echo(f"reset {username}; password (to change at next sign-in): {password}")
    if uri:
        click.echo(f"authenticator: {uri}")
