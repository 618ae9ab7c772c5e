"""`stophub demo`: the whole life of two fraud cases over real gRPC (hub/cli/demo_story.py);
with --console, the network then stays up with a web console per institution
(hub/cli/demo_console.py)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from hub import bootstrap
from hub.cli.demo_console import PortBusy, bind_ports, keep_running
from hub.cli.demo_story import run_demo
from hub.render.screen import console, make_console


@click.command("demo")
@click.option(
    "--dir", "directory", default="var/demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--console",
    "consoles",
    is_flag=True,
    help="Afterwards keep the network running with a web console for the centre, each member "
    "and a regulator, and print their addresses and logins; Ctrl-C stops it.",
)
@click.option(
    "--console-port",
    default=8470,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The centre's console port; BANKA, BANKB, PAYX and REG take the next four.",
)
def demo(directory: str, consoles: bool, console_port: int) -> None:
    """Run a whole case over real gRPC: report, verify, stop, answers, freeze, return, close."""
    # Logs and CI are not terminals; their 80 columns would fold every timeline row.
    out = console if console.is_terminal else make_console(width=150)
    if not consoles:
        sys.exit(bootstrap.run_to_completion(run_demo(Path(directory), out)))
    try:
        sockets = bind_ports(console_port)
    except PortBusy as err:
        raise click.ClickException(str(err)) from err
    try:
        status = bootstrap.run_to_completion(
            run_demo(
                Path(directory),
                out,
                keep=functools.partial(keep_running, screen=out, sockets=sockets),
            )
        )
    except KeyboardInterrupt:
        click.echo("demo interrupted; the hub and the consoles are stopped", err=True)
        sys.exit(130)
    finally:
        for sock in sockets:
            sock.close()
    click.echo("stopped: the consoles and the hub")
    sys.exit(status)
