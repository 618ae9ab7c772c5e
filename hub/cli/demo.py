"""`stophub demo`: the whole life of two fraud cases over real gRPC (hub/cli/demo_story.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from hub.cli.demo_story import run_demo
from hub.render.screen import console, make_console


@click.command("demo")
@click.option(
    "--dir", "directory", default="var/demo", show_default=True, type=click.Path(file_okay=False)
)
def demo(directory: str) -> None:
    """Run a whole case over real gRPC: report, verify, stop, answers, freeze, return, close."""
    # Logs and CI are not terminals; their 80 columns would fold every timeline row.
    out = console if console.is_terminal else make_console(width=150)
    sys.exit(asyncio.run(run_demo(Path(directory), out)))
