"""The report CPU benchmark runs on SQLite and its floor replays real statements."""

from __future__ import annotations

import argparse

from bench.reportcpu import measure, to_rows


def test_a_small_run_measures_the_pipeline_above_the_driver_floor() -> None:
    args = argparse.Namespace(reports=4, rounds=2, quick=True, no_postgres=True)
    [found] = measure(args)
    assert found.database == "SQLite"
    # CreateReport's reads and writes, caught at the driver and sent again (rolled back).
    assert found.statements >= 10
    assert found.reports == found.floor_reports == 8
    assert len(found.rounds) == 2
    assert found.cpu > found.floor_cpu > 0
    # Each case confirmed, the centre's auto stop on (the bench checks that each made a stop).
    assert found.verifications == 8
    assert found.verify_cpu > 0
    assert found.verify_statements > found.statements
    rows = to_rows([found])
    assert [r.benchmark for r in rows] == ["reportcpu"] * 3
    assert rows[0].baseline.startswith(f"the driver alone sending its {found.statements}")
