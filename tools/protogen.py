"""Generate the Python code and .pyi stubs for proto/stophub/v1 into stophub/v1.

`python tools/protogen.py` writes the files; `python tools/protogen.py --check`
generates into a temporary directory and exits 1 if anything differs from what
is committed (the drift test calls this too).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = Path("stophub") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "stophub" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    include = Path(grpc_tools.__file__).parent / "_proto"
    plugin_dir = Path(sys.executable).parent
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    subprocess.run(args, check=True, cwd=PROTO_ROOT)
    for pkg in (out_dir / "stophub", out_dir / OUT_PACKAGE):
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/stophub/v1; run `make proto`."""\n')


def generated_files(base: Path) -> dict[str, bytes]:
    pkg = base / OUT_PACKAGE
    return {
        p.name: p.read_bytes() for p in sorted(pkg.iterdir()) if p.name.endswith(GENERATED_SUFFIXES)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code drifted")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp))
        if ns.check:
            committed = generated_files(ROOT) if (ROOT / OUT_PACKAGE).exists() else {}
            drift = sorted(
                name
                for name in set(fresh) | set(committed)
                if fresh.get(name) != committed.get(name)
            )
            if drift:
                print("generated code differs from proto/ (run `make proto`):", *drift)
                return 1
            print(f"{len(fresh)} generated files match proto/")
            return 0
        target = ROOT / OUT_PACKAGE
        target.mkdir(parents=True, exist_ok=True)
        for old in target.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
        for name in fresh:
            shutil.copyfile(Path(tmp) / OUT_PACKAGE / name, target / name)
        for pkg in (ROOT / "stophub", target):
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated from proto/stophub/v1; run `make proto`."""\n')
    print(f"wrote {len(fresh)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
