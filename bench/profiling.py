"""py-spy on a process during a benchmark: where its time goes (`--profile`, `--list-profile`).
py-spy is not a dependency; install it to profile."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path


def record_stacks(
    pid: int, out: Path, wanted_by: str, seconds: float | None = None
) -> subprocess.Popen[bytes] | None:
    """py-spy recording the stacks of `pid` into `out` (raw, 200 samples a second, without
    pausing it) for `seconds`, or until it is sent SIGINT when `seconds` is None. None, and a
    line saying so, when py-spy is not installed; `wanted_by` names the option that asked."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print(f"{wanted_by} needs py-spy (pip install py-spy); not profiling", flush=True)
        return None
    duration = () if seconds is None else ("--duration", str(math.ceil(seconds)))
    return subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), *duration),
            *("--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
