"""Warnings on a real database (SQLite and PostgreSQL): the store's search pages newest first
with each filter, the lock a closing outcome takes, and the clocks with a warning's id where a
case's would be (no foreign key to cases any more, migration 0016)."""

from __future__ import annotations

from datetime import timedelta

from hub.domain.clocks import ClockState
from hub.domain.warnings import WarningState
from hub.service.commands.warning import (
    ACKNOWLEDGE_WARNING,
    LIST_WARNINGS,
    REPORT_WARNING_OUTCOME,
    SEND_WARNING,
    SET_WARNING_GRADE,
)
from hub.system.policy import load_policy
from stophub.v1 import account_pb2, grade_pb2, warning_pb2

from .test_hub_on_db import Net


def send(net: Net, bank: str, number: str) -> warning_pb2.Warning:
    body = warning_pb2.SendWarningBody(
        account=account_pb2.AccountRef(institution_code=bank, account_number=number),
        amount_at_risk_fen=500_000,
        grade=grade_pb2.GRADE_YELLOW,
    )
    return net.call("CENTRE", SEND_WARNING, body, warning_pb2.Warning)


def test_warnings_on_the_database(net: Net) -> None:
    net.hub.clock_policy = load_policy()
    sent = []
    for i in range(5):
        sent.append(send(net, "BANKB" if i % 2 else "BANKA", f"62220000000000{i:02d}"))
        net.clock.advance(timedelta(seconds=1))
    first = sent[1].warning_id  # BANKB's
    net.call(
        "BANKB",
        ACKNOWLEDGE_WARNING,
        warning_pb2.AcknowledgeWarningBody(warning_id=first),
        warning_pb2.Warning,
    )
    regraded = net.call(
        "CENTRE",
        SET_WARNING_GRADE,
        warning_pb2.SetWarningGradeBody(
            name=f"warnings/{sent[3].warning_id}", grade=grade_pb2.GRADE_RED, reason="moving"
        ),
        warning_pb2.Warning,
    )
    assert regraded.contact_by_time.ToSeconds() == sent[3].send_time.ToSeconds() + 600
    closed = net.call(
        "BANKB",
        REPORT_WARNING_OUTCOME,
        warning_pb2.ReportWarningOutcomeBody(
            warning_id=first,
            outcome=warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED,
            loss_prevented_fen=500_000,
        ),
        warning_pb2.Warning,
    )
    assert closed.state == warning_pb2.WARNING_STATE_CLOSED

    # BANKB pages its own two, newest first; the centre all five.
    seen, token = [], ""
    while True:
        page = net.call(
            "BANKB",
            LIST_WARNINGS,
            warning_pb2.ListWarningsBody(page_size=1, page_token=token),
            warning_pb2.WarningList,
        )
        seen += [w.warning_id for w in page.warnings]
        token = page.next_page_token
        if not token:
            break
    assert seen == [sent[3].warning_id, sent[1].warning_id]
    every = net.call(
        "CENTRE", LIST_WARNINGS, warning_pb2.ListWarningsBody(), warning_pb2.WarningList
    )
    assert [w.warning_id for w in every.warnings] == [w.warning_id for w in reversed(sent)]
    still_open = net.call(
        "CENTRE",
        LIST_WARNINGS,
        warning_pb2.ListWarningsBody(open_only=True),
        warning_pb2.WarningList,
    )
    assert first not in {w.warning_id for w in still_open.warnings}
    assert len(still_open.warnings) == 4

    with net.store(read_only=True) as uow:
        found = uow.warnings.search(
            state=WarningState.CLOSED, party="BANKB", open_only=False, limit=10, after=None
        )
        assert [w.warning_id for w in found] == [first]
        clocks = {c.kind: c for c in uow.clocks.open_for_case(sent[3].warning_id)}
        assert set(clocks) == {"warning_contact_red", "warning_outcome"}
        assert uow.clocks.open_for_case(first) == []
        assert all(c.state is ClockState.OPEN for c in clocks.values())
