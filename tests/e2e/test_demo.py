"""`stophub demo` runs the whole case and leaves a database that `stophub case show` reads."""

from __future__ import annotations

import io
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from hub.cli import main
from hub.demo import run_demo
from hub.domain.cases import CaseState, OrderKind, OrderState
from hub.domain.clocks import ClockState
from hub.store.sql import SqlStore


async def test_demo_carries_the_case_to_close(tmp_path: Path) -> None:
    out = io.StringIO()
    status = await run_demo(tmp_path / "demo", Console(file=out, width=160))
    text = out.getvalue()
    assert status == 0, text
    store = SqlStore(f"sqlite:///{tmp_path}/demo/stophub.db")
    try:
        with store(read_only=True) as uow:
            (case,) = uow.cases.list(None, 10, None)
    finally:
        store.dispose()
    assert case.state is CaseState.CLOSED
    assert case.loss_fen == case.returned_fen == 5_000_000
    kinds = [o.kind for o in case.orders]
    assert kinds.count(OrderKind.STOP) == 2 and kinds.count(OrderKind.FREEZE) == 2
    auto = case.orders[0]
    assert auto.auto_stop_rule_id and auto.authorization_envelope, "the rule authorised it"
    assert auto.state is OrderState.CONVERTED
    assert all(o.answer_envelope for o in case.orders), "every answer is kept as signed bytes"
    assert "signed messages of the case" in text and "¥50,000.00 back with the victim" in text
    assert "re-verified with the" in text and "all good" in text
    assert "appear nowhere in stophub.db" in text
    assert "serving mutual TLS" in text

    # PayX answers its stop 12 minutes (of case time) late: reminded, then breached.
    store = SqlStore(f"sqlite:///{tmp_path}/demo/stophub.db")
    try:
        with store(read_only=True) as uow:
            clocks = uow.clocks.query(
                institution="PAYX",
                case_id=case.case_id,
                open_only=False,
                breached_only=False,
                limit=50,
                offset=0,
            )
            late_stop = next(c for c in clocks if c.kind == "stop")
            steps = [e.event for e in uow.clocks.entries([late_stop.clock_id])[late_stop.clock_id]]
            others = uow.clocks.query(
                institution=None,
                case_id=case.case_id,
                open_only=False,
                breached_only=True,
                limit=50,
                offset=0,
            )
    finally:
        store.dispose()
    assert late_stop.state is ClockState.MISSED and late_stop.breached
    assert steps == ["started", "reminder", "breach", "missed"]
    assert [c.clock_id for c in others] == [late_stop.clock_id], "only the slow bank breached"
    assert "case clocks" in text and "clock_breach to CENTRE" in text

    shown = CliRunner().invoke(
        main, ["case", "show", case.case_id, "--db", f"sqlite:///{tmp_path}/demo/stophub.db"]
    )
    assert shown.exit_code == 0, shown.output
    assert "case.closed" in shown.output and "report → verified" in shown.output
