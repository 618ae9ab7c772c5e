"""Item 3 of issue 19: what the CLI prints is printed as given. rich turned `:AB:` in the CA's
fingerprint into an emoji, and would read `[bold]` in a holder name a bank sent as markup."""

from __future__ import annotations

import ast
from pathlib import Path

from hub.render.screen import make_console

HUB = Path(__file__).resolve().parents[2] / "hub"


def test_hex_ids_and_brackets_come_out_as_given() -> None:
    console = make_console(width=200, record=True, force_terminal=False)
    fingerprint = "81:D5:AB:1E:9B:FF:00"
    console.print(f"CA {fingerprint}; holder [bold]Li[/bold] Si; :smile: C20261204-AB12CD34")
    out = console.export_text()
    assert fingerprint in out
    assert "[bold]Li[/bold] Si" in out
    assert ":smile:" in out


def test_every_console_of_the_cli_is_made_by_make_console() -> None:
    made = []
    # The command line and what it draws with (hub/render).
    for path in sorted([*(HUB / "cli").rglob("*.py"), *(HUB / "render").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Console":
                made.append(f"{path.relative_to(HUB)}:{node.lineno}")
    assert len(made) == 1 and made[0].startswith("render/screen.py:"), made
