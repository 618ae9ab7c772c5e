"""A newcomer's install prints no warning the project could avoid (issue 19): the wheel the
image is built from and the editable install `make install` makes, each built by pip with its
build isolation from the files a clone holds, as pip builds them for a newcomer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hub.store import auditscan

ROOT = Path(__file__).resolve().parents[2]


def clone(tmp_path: Path) -> Path:
    """The files a clone of the working tree would hold: tracked or new, never ignored ones
    (no .venv, no var/, no built module)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    copy = tmp_path / "stophub"
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (copy / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name.decode())
    return copy


def pip(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def warnings_in(output: str) -> list[str]:
    """Lines that warn, except pip's own notes about index locations this machine's pip
    configuration names (PIP_FIND_LINKS, pip.conf): those are the machine's, not the project's."""
    return [
        line
        for line in output.splitlines()
        if "warning" in line.lower() and not line.startswith("WARNING: Location '")
    ]


def test_the_wheel_builds_without_a_warning_and_holds_every_file(tmp_path: Path) -> None:
    project = clone(tmp_path)
    output = pip("wheel", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), ".", cwd=project)
    assert warnings_in(output) == [], output
    [wheel] = (tmp_path / "wheels").glob("stophub-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in (
        "adapters/iso20022/xsd/camt.056.001.12.xsd",
        "adapters/iso20022/xsd/camt.029.001.14.xsd",
        "adapters/iso20022/xsd/README.md",
        "adapters/iso20022/ext/stophub.supl.001.01.xsd",
        "hub/system/policy.toml",
        "migrations/script.py.mako",
        "stophub/v1/case_pb2.pyi",
    ):
        assert data in names, data
    if auditscan.native_available():  # this machine has a compiler and OpenSSL's headers
        assert any(n.startswith("hub/store/_leafscan.") and n.endswith(".so") for n in names)


def test_the_editable_install_prints_no_warning(tmp_path: Path) -> None:
    project = clone(tmp_path)
    # A venv of its own (pip installs into it from outside, with --python): an install with
    # --prefix would first uninstall the project from the venv running the tests.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    output = pip("--python", str(python), "install", "--no-deps", "-e", ".", cwd=project)
    assert warnings_in(output) == [], output
    [pth] = venv.glob("lib/python*/site-packages/__editable__.stophub-*.pth")
    assert pth.read_text().split() == [str(project)]
