"""One table for every benchmark: each figure beside the baseline measured in the same run.

Absolute times on a shared 2-core machine drift from run to run; a ratio to something the
machine did in the same minutes does not drift as much. Each benchmark module returns `Row`s;
`python -m bench` prints them together.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    benchmark: str  # "intake", "delivery", "clocks", ...
    measure: str  # "reports/s, SQLite, 16 in flight"
    value: float
    unit: str  # "req/s", "ms", "µs", ...
    baseline: str = ""  # what the value is compared with: "grpc.aio echo, same size"
    baseline_value: float | None = None
    # Higher is better for throughput, lower for latency: says which way the ratio reads.
    higher_is_better: bool = True
    target: str = ""  # "≥ 40 % of echo", "p99 < 50 ms"
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render(rows: Iterable[Row]) -> str:
    """A Markdown table, ready for BENCHMARKS.md."""
    lines = [
        "| benchmark | measure | value | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = (
            f"{_num(r.baseline_value)} {r.unit} ({r.baseline})"
            if r.baseline_value is not None
            else r.baseline
        )
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}×"
        target = r.target
        if r.met is not None:
            target = f"{target} {'met' if r.met else 'MISSED'}".strip()
        lines.append(
            f"| {r.benchmark} | {r.measure} | {_num(r.value)} {r.unit} | {base} | {ratio} "
            f"| {target} |"
        )
    return "\n".join(lines)


def standalone(
    argv: Sequence[str],
    prog: str,
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    rows: Callable[[argparse.Namespace], list[Row]],
) -> int:
    """`python -m bench.<name>`: one benchmark's options (with --quick and --no-postgres), its
    rows printed as the table; 1 when a row is INVALID (as `python -m bench`)."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    add_arguments(p)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-postgres", action="store_true")
    exit_on_sigterm()
    result = rows(p.parse_args(argv))
    print()
    print(render(result))
    return 1 if any(r.met is False for r in result if "INVALID" in r.measure) else 0


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C: the servers and the PostgreSQL databases of the run are
    stopped and dropped by their context managers instead of being left behind."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
