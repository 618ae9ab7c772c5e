"""Generate (or check) the xsdata bindings of the vendored ISO 20022 schemas.

    .venv/bin/python tools/iso20022gen.py           # regenerate adapters/iso20022/generated/
    .venv/bin/python tools/iso20022gen.py --check   # fail if the committed code drifted

Each schema in adapters/iso20022/xsd/ becomes one module of the package
adapters.iso20022.generated, named after the file (camt.056.001.12.xsd ->
camt_056_001_12.py), with exactly this command, run from the repository root:

    xsdata generate adapters/iso20022/xsd/<name>.xsd \\
        --package adapters.iso20022.generated --structure-style filenames \\
        --docstring-style Blank --max-line-length 100

The output depends on the xsdata version (26.10 made the committed code).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
XSD_DIR = ROOT / "adapters" / "iso20022" / "xsd"
OUT_DIR = ROOT / "adapters" / "iso20022" / "generated"
PACKAGE = "adapters.iso20022.generated"
XSDATA_VERSION = "26.10"
INIT = '''"""xsdata bindings of the vendored ISO 20022 schemas (tools/iso20022gen.py; do not edit).

Import the module of one message version, e.g. `from adapters.iso20022.generated import
camt_056_001_12`: the schemas share type names, so this package re-exports nothing.
"""
'''


def _xsdata() -> str:
    exe = Path(sys.executable).parent / "xsdata"
    if not exe.exists():
        raise SystemExit(f"xsdata not found beside {sys.executable}: pip install 'xsdata[cli]'")
    return str(exe)


def _ruff_like_xsdata(folder: Path) -> None:
    """The lint fixes and formatting xsdata applies to what it generates."""
    from xsdata.formats.dataclass import generator

    config = Path(generator.__file__).parent / "ruff.toml"
    ruff = Path(sys.executable).parent / "ruff"
    files = [str(p) for p in sorted(folder.glob("*.py"))]
    common = ["--config", str(config), "--config", "line-length=100"]
    subprocess.run(
        [str(ruff), "check", *common, "--fix", "--unsafe-fixes", "--exit-zero", "-q", *files],
        check=True,
        capture_output=True,
    )
    subprocess.run([str(ruff), "format", *common, "-q", *files], check=True, capture_output=True)


def generate(into: Path) -> list[Path]:
    """Run xsdata for every vendored schema with `into` as the working directory."""
    made: list[Path] = []
    xsds = sorted(XSD_DIR.glob("*.xsd"))
    if not xsds:
        raise SystemExit(f"no schemas in {XSD_DIR}")
    for xsd in xsds:
        done = subprocess.run(
            [
                _xsdata(),
                "generate",
                str(xsd),
                "--package",
                PACKAGE,
                "--structure-style",
                "filenames",
                "--docstring-style",
                "Blank",
                "--max-line-length",
                "100",
            ],
            cwd=into,
            # xsdata formats its output with ruff: the venv's, with ruff's default settings
            # (the temporary directory has no configuration).
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            },
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"xsdata failed on {xsd.name}:\n{done.stdout}{done.stderr}")
    pkg = into.joinpath(*PACKAGE.split("."))
    # xsdata writes an __init__.py re-exporting the last schema's classes; both schemas use
    # the same type names, so the package exports nothing and callers import the module.
    (pkg / "__init__.py").write_text(INIT)
    for path in sorted(pkg.glob("*.py")):
        made.append(path)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        made = generate(Path(tmp))
        pkg = Path(tmp).joinpath(*PACKAGE.split("."))
        if args.check:
            # xsdata formats its output with whatever ruff is installed; put the committed
            # files through the same ruff passes so that only a change of content is drift.
            committed = Path(tmp) / "committed"
            committed.mkdir()
            for p in OUT_DIR.glob("*.py"):
                shutil.copy2(p, committed / p.name)
            _ruff_like_xsdata(committed)
            drift = [
                p.name
                for p in made
                if not (committed / p.name).exists()
                or not filecmp.cmp(p, committed / p.name, shallow=False)
            ]
            extra = sorted({p.name for p in committed.glob("*.py")} - {p.name for p in made})
            if drift or extra:
                print(
                    f"drift in {OUT_DIR.relative_to(ROOT)}: {', '.join(drift + extra)}; "
                    "run tools/iso20022gen.py"
                )
                return 1
            print(f"{OUT_DIR.relative_to(ROOT)} matches the schemas")
            return 0
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for old in OUT_DIR.glob("*.py"):
            old.unlink()
        for p in made:
            shutil.copy2(p, OUT_DIR / p.name)
        print(f"wrote {len(made)} files to {OUT_DIR.relative_to(ROOT)} from {pkg.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
