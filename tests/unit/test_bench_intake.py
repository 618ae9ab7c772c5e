"""The intake benchmark judges issue 22's CPU target from the figures it measured."""

from __future__ import annotations

import pytest

from bench.intake import Config, Run, to_rows


def _config(hub_cpu: float, echo_cpu: float, errors: int = 0) -> Config:
    def run(requests: int) -> Run:
        return Run(requests, errors, 10.0, [0.001] * requests, [])

    return Config("SQLite", 1, run(1000), run(100), 512, 50, echo_cpu=echo_cpu, hub_cpu=hub_cpu)


def _cpu_row(config: Config) -> tuple[str, bool | None]:
    row = next(r for r in to_rows([config]) if r.measure.startswith("server CPU"))
    return row.target, row.met


@pytest.mark.parametrize(
    ("hub_cpu", "met"),
    [(0.02, True), (0.029, True), (0.031, False), (0.35, False)],
)
def test_the_cpu_row_is_met_at_ten_times_the_echo_and_not_above(hub_cpu: float, met: bool) -> None:
    # The echo answered 1,000 requests with 0.03 s of CPU (0.03 ms each); the hub 100
    # reports: 10x the echo is 0.03 s.
    assert _cpu_row(_config(hub_cpu, 0.03)) == ("≤ 10× echo", met)


def test_a_run_with_errors_meets_no_target() -> None:
    assert _cpu_row(_config(0.02, 0.03, errors=1)) == ("≤ 10× echo", False)


def test_the_withdrawn_throughput_target_is_not_judged() -> None:
    row = next(r for r in to_rows([_config(0.1, 0.03)]) if r.measure.startswith("reports/s"))
    assert (row.target, row.met) == ("", None)


def test_the_cpu_row_names_each_rounds_ratio() -> None:
    config = _config(0.02, 0.03)
    config.round_ratios = [6.5, 7.25]
    row = next(r for r in to_rows([config]) if r.measure.startswith("server CPU"))
    assert "rounds 6.5×, 7.2×" in row.measure
