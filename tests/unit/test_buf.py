"""The contract checks of `make lint`: `buf lint` on proto/ and `buf breaking` against the
last release's baseline image (docs/proto-style.md).

Each breaking test copies proto/ and buf.yaml to a temporary directory, makes one change
that v1 forbids, and checks that `buf breaking` against the committed baseline refuses it
and names what changed. Skipped when the pinned buf CLI is not installed
(`npm ci --prefix tools/buf`, which `make lint` does first).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"
RELEASES = ROOT / "proto" / "releases"

pytestmark = pytest.mark.skipif(
    not BUF.exists(),
    reason="buf is not installed: run `npm ci --prefix tools/buf` (make lint does)",
)


def baseline() -> Path:
    name = (RELEASES / "CURRENT").read_text().strip()
    path = RELEASES / name
    assert path.is_file(), f"proto/releases/CURRENT names {name}, which is missing"
    return path


def buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the repository's proto module (without the release images)."""
    shutil.copytree(ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("*.binpb"))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def edit(tree: Path, file: str, old: str, new: str) -> None:
    path = tree / "proto" / "stophub" / "v1" / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {file} exactly once"
    path.write_text(text.replace(old, new))


def breaking(tree: Path) -> subprocess.CompletedProcess[str]:
    return buf("breaking", "--against", str(baseline()), cwd=tree)


def test_lint_passes_on_the_real_tree() -> None:
    result = buf("lint", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_lint_is_not_vacuous(tree: Path) -> None:
    # The STANDARD rules are on: an enum zero value without _UNSPECIFIED is reported.
    edit(tree, "order.proto", "ORDER_KIND_UNSPECIFIED = 0;", "ORDER_KIND_NONE = 0;")
    result = buf("lint", cwd=tree)
    assert result.returncode != 0
    assert "ENUM_ZERO_VALUE_SUFFIX" in result.stdout or "_UNSPECIFIED" in result.stdout


def test_the_tree_is_compatible_with_the_release_baseline() -> None:
    result = buf("breaking", "--against", str(baseline()), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unchanged_copy_is_compatible(tree: Path) -> None:
    result = breaking(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_removing_a_field_is_breaking(tree: Path) -> None:
    edit(tree, "order.proto", "  string reason_code = 3;\n", "")
    result = breaking(tree)
    assert result.returncode != 0
    assert re.search(
        r'field "3" with name "reason_code" on message "ExecutionResult"', result.stdout
    )
    assert "order.proto" in result.stdout


def test_renumbering_a_field_is_breaking(tree: Path) -> None:
    edit(tree, "order.proto", "int64 amount_held_fen = 5;", "int64 amount_held_fen = 55;")
    result = breaking(tree)
    assert result.returncode != 0
    assert re.search(
        r'field "5" with name "amount_held_fen" on message "ExecutionResult"', result.stdout
    )


def test_renaming_an_envelope_field_is_breaking(tree: Path) -> None:
    # Same number, new name: the wire is unchanged but the generated Python is not.
    edit(tree, "envelope.proto", "string message_id = 3;", "string request_id = 3;")
    result = breaking(tree)
    assert result.returncode != 0
    assert 'on message "Envelope" changed name from "message_id" to "request_id"' in result.stdout


def test_renaming_an_enum_value_is_breaking(tree: Path) -> None:
    edit(tree, "order.proto", "ORDER_KIND_STOP = 1;", "ORDER_KIND_EMERGENCY_STOP = 1;")
    result = breaking(tree)
    assert result.returncode != 0
    assert 'changed name from "ORDER_KIND_STOP" to "ORDER_KIND_EMERGENCY_STOP"' in result.stdout


def test_changing_a_field_type_is_breaking(tree: Path) -> None:
    edit(
        tree,
        "order.proto",
        "int64 amount_fen = 2;\n  // The fraudulent credits",
        "int32 amount_fen = 2;\n  // The fraudulent credits",
    )
    result = breaking(tree)
    assert result.returncode != 0
    assert "amount_fen" in result.stdout and "StopInstruction" in result.stdout


def test_adding_a_field_is_not_breaking(tree: Path) -> None:
    edit(
        tree,
        "order.proto",
        "  int64 amount_returned_fen = 10;\n}",
        "  int64 amount_returned_fen = 10;\n  string branch_code = 11;\n}",
    )
    result = breaking(tree)
    assert result.returncode == 0, result.stdout + result.stderr
