"""The metrics snapshot's clock figures on a real database (SQLite and PostgreSQL): they
equal a count of every clock row, and on SQLite the plan reads index ranges only, never the
closed clocks of every case the hub has run (a scrape runs it every few seconds)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from hub.domain.clocks import ClockState
from hub.observability.metrics import sql_snapshot
from hub.service.commands.case import CREATE_REPORT
from hub.store.reports import COUNT_BREACHED_CLOCKS, COUNT_OPEN_CLOCKS
from hub.store.tables import clocks
from stophub.v1 import case_pb2

from .test_hub_on_db import MULE_B, Net, net, report  # noqa: F401  (the fixture)


def clock_rows(
    case_id: str, now: datetime, count: int, *, closed: bool = False, first: int = 0
) -> list[dict[str, Any]]:
    """Every combination the figures tell apart: open or stopped, breached or not, and two
    kinds; `closed`: stopped ones only, one in fifty breached, as a hub's history is."""
    rows = []
    for i in range(first, first + count):
        state = [ClockState.OPEN, ClockState.MISSED, ClockState.MET][i % 3]
        breached = i % 2 == 0
        if closed:
            state, breached = (ClockState.MISSED, True) if i % 50 == 0 else (ClockState.MET, False)
        rows.append(
            {
                "clock_id": f"CLK-{i}",
                "case_id": case_id,
                "order_id": "",
                "kind": ["verify", "investigate"][i % 4 // 2],
                "responsible": "BANKA",
                "started_at": now,
                "deadline_at": now,
                "state": state,
                "next_step": "",
                "next_step_at": None,
                "steps_done": 0,
                "breached": breached,
                "stopped_at": None,
                "stopped_by": "",
            }
        )
    return rows


def test_the_clock_figures_count_every_clock(net: Net) -> None:  # noqa: F811
    case = net.call("BANKA", CREATE_REPORT, report(net.clock.now(), [(MULE_B, 100)]), case_pb2.Case)
    now = net.clock.now()
    with net.store.engine.begin() as conn:
        conn.execute(insert(clocks), clock_rows(case.case_id, now, 12))
        conn.execute(insert(clocks), clock_rows(case.case_id, now, 100, closed=True, first=12))
        rows = conn.execute(select(clocks.c.kind, clocks.c.state, clocks.c.breached)).all()
    snap = sql_snapshot(net.store)()
    open_ = Counter(k for k, s, _ in rows if s == ClockState.OPEN)
    overdue = Counter(k for k, s, b in rows if s == ClockState.OPEN and b)
    breaches = Counter(k for k, _, b in rows if b)
    assert dict(snap.open_clocks) == dict(open_) and open_
    assert dict(snap.overdue_clocks) == dict(overdue) and overdue
    assert dict(snap.breaches) == dict(breaches) and breaches != overdue


def test_the_clock_figures_read_index_ranges_only(net: Net) -> None:  # noqa: F811
    engine = net.store.engine
    if engine.dialect.name != "sqlite":
        pytest.skip(
            "PostgreSQL's planner picks a sequential scan for a table this small whatever "
            "the indexes; the plan is checked on SQLite, whose planner follows the indexes"
        )
    # The planner as it decides on a hub's database: statistics of a table where most clocks
    # are closed (ANALYZE), which is what turned the first version's plan into a full scan.
    case = net.call("BANKA", CREATE_REPORT, report(net.clock.now(), [(MULE_B, 100)]), case_pb2.Case)
    with engine.begin() as conn:
        conn.execute(insert(clocks), clock_rows(case.case_id, net.clock.now(), 2000, closed=True))
        conn.execute(insert(clocks), clock_rows(case.case_id, net.clock.now(), 20, first=2000))
        conn.execute(text("ANALYZE"))
    with engine.connect() as conn:
        for statement, index in (
            (COUNT_OPEN_CLOCKS, "ix_clocks_state_kind_breached"),
            (COUNT_BREACHED_CLOCKS, "ix_clocks_breached_kind"),
        ):
            compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
            plan = " | ".join(
                str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
            )
            assert "SEARCH clocks USING COVERING INDEX" in plan and index in plan, plan
            assert "SCAN clocks" not in plan, plan
