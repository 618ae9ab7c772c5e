"""README.md's "Running a hub" works as pasted (issue 19): the test takes the section's shell
block from README.md itself, so the two cannot drift apart, and runs it with bash in a copy
of the clone, on a free port instead of 7443, as a newcomer would after cloning."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_install import clone

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def section_block(title: str) -> str:
    """The first ```sh block of the README section `title`."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert found, f"README's {title!r} has a ```sh block"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_clone(tmp_path: Path) -> Path:
    """The clone's files (tracked or new, not ignored; times kept, so that make sees the
    install as done) and the project's .venv, which `make install` made already."""
    venv = ROOT / ".venv"
    if not (venv / "bin" / "stophub").exists():
        pytest.skip("no .venv: run make install")
    up_to_date = subprocess.run(["make", "-q", "install"], cwd=ROOT, capture_output=True)
    if up_to_date.returncode != 0:
        # Re-installing from the copy would point the project's .venv at it.
        pytest.skip("make install is not up to date: run it first")
    project = clone(tmp_path)
    (project / ".venv").symlink_to(venv)
    return project


def test_running_a_hub_works_as_pasted(tmp_path: Path) -> None:
    block = section_block("Running a hub")
    assert "127.0.0.1:7443" in block
    port = free_port()
    clone = fresh_clone(tmp_path)
    # A newcomer's shell: none of this test run's settings (its keyring, its database).
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOPHUB_")}
    log = tmp_path / "output.txt"
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-e", "-c", block.replace("127.0.0.1:7443", f"127.0.0.1:{port}")],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the hub it leaves serving is in its process group
        )
        try:
            shell.wait(timeout=100)
        finally:
            # The block leaves the hub serving in the background: stop it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGTERM)
            shell.wait(timeout=10)
    output = log.read_text()
    assert shell.returncode == 0, output
    assert "BANKA reached the hub; it vouches for CENTRE, Anti-Fraud Centre" in output, output
    assert "Traceback" not in output, output
    for made in ("var/hub.pub", "var/to-banka/ca.pem", "var/to-banka/banka-tls.pem"):
        assert (clone / made).is_file(), made
