"""The committed generated code must be exactly what proto/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "protogen.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_proto_has_generated_code_and_stubs() -> None:
    for proto in sorted((ROOT / "proto" / "stophub" / "v1").glob("*.proto")):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (ROOT / "stophub" / "v1" / f"{proto.stem}{suffix}").exists(), proto.stem + suffix
