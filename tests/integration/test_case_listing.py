"""ListCases on a real database: the blind index written with every case and filled by the
hub at start for cases from before it (or under another index key), and 10,000 open cases
listed a page at a time in well under 100 ms per page on SQLite, by every filter and in
deadline order (the SQL does the work, through indexes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from hub.crypto import blindindex, fields
from hub.domain.grades import grade_of
from hub.service.ports import CaseQuery
from hub.store.sql import SqlStore
from hub.store.tables import cases, clocks, fraud_transactions
from tests.integration.test_store import MULE_B, T, members, opened  # noqa: F401


def tokens_of(store: SqlStore) -> dict[str, tuple[bytes | None, bytes | None, str | None]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                cases.c.case_id,
                cases.c.victim_name_token,
                cases.c.victim_id_token,
                cases.c.victim_index_key,
            )
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_tokens_are_written_with_the_case_and_backfilled_at_start(
    members: SqlStore,  # noqa: F811
) -> None:
    store = members
    with store() as uow:
        uow.cases.add(opened("C20260302-0001", T))
        uow.cases.add(opened("C20260302-0002", T + timedelta(seconds=1)))
        uow.commit()
    index = blindindex.current_index()
    written = tokens_of(store)
    assert written["C20260302-0001"] == (
        index.name_token("Zhang San"),
        index.id_number_token("110101199001011234"),
        index.key_id,
    )
    # Rows from before revision 0013 hold nothing; one under another index key is stale.
    with store.engine.begin() as conn:
        conn.execute(
            update(cases)
            .where(cases.c.case_id == "C20260302-0001")
            .values(victim_name_token=None, victim_id_token=None, victim_index_key=None)
        )
        conn.execute(
            update(cases)
            .where(cases.c.case_id == "C20260302-0002")
            .values(victim_name_token=b"\x00" * 32, victim_index_key="dk-retired")
        )
    assert store.index_victims(batch=1) == 2
    assert tokens_of(store) == written
    assert store.index_victims() == 0, "nothing left to index"
    with store(read_only=True) as uow:
        found = uow.cases.search(
            CaseQuery(victim_name_token=index.name_token("ZHANG  san")), 10, None
        )
    assert [c.case_id for c, _ in found] == ["C20260302-0002", "C20260302-0001"]


def test_the_index_key_is_derived_from_the_oldest_data_key_not_the_current() -> None:
    ring = fields.keyring()
    rotated = ring.with_key("dk-newer", b"\x01" * 32, make_current=True)
    fields.configure(rotated)
    try:
        index = blindindex.current_index()
        assert index.key_id == ring.order[0]
    finally:
        fields.configure(ring)


def test_every_filter_and_the_deadline_order_over_many_cases(
    store: SqlStore, request: pytest.FixtureRequest
) -> None:
    """Each filter finds what it should among 2,000 cases, and the deadline order pages
    through them in order. How fast: bench/console.py (10,000 open cases), not a timed test."""
    from hub.domain.institutions import Institution
    from tests.integration.test_store import KINDS, contacts

    with store() as uow:
        for code, kind in KINDS.items():
            uow.institutions.add(Institution.register(code, code, kind, T, contacts(code)))
        uow.commit()
    n = 2_000
    index = blindindex.current_index()
    template = opened("C-TEMPLATE", T)
    with store() as uow:
        uow.cases.add(template)
        uow.commit()
    with store.engine.begin() as conn:
        row = dict(
            conn.execute(select(cases).where(cases.c.case_id == "C-TEMPLATE")).one()._mapping
        )
        tx = dict(conn.execute(select(fraud_transactions)).one()._mapping)
        rows, txs, clock_rows = [], [], []
        for i in range(n):
            case_id = f"C20260302-{i:08X}"
            name = f"Victim {i}"
            rows.append(
                {
                    **row,
                    "case_id": case_id,
                    "created_at": T + timedelta(seconds=i),
                    "victim_name": name,
                    "victim_name_token": index.name_token(name),
                    "victim_id_token": index.id_number_token(f"1101011990{i:08d}"),
                }
            )
            txs.append({**tx, "case_id": case_id, "payer_account": f"6222{i:012d}"})
            clock_rows.append(
                {
                    "clock_id": f"K{i:020X}",
                    "case_id": case_id,
                    "order_id": "",
                    "kind": "verify",
                    "responsible": "BANKA",
                    "started_at": T,
                    "deadline_at": T + timedelta(minutes=(i * 7919) % n),
                    "state": "open",
                    "next_step": "",
                    "next_step_at": None,
                    "steps_done": 0,
                    "breached": False,
                    "stopped_at": None,
                    "stopped_by": "",
                    "deadline_estimated": False,
                }
            )
        conn.execute(cases.insert(), rows)
        conn.execute(fraud_transactions.insert(), txs)
        conn.execute(clocks.insert(), clock_rows)

    def pages(query: CaseQuery, count: int = 3) -> list[tuple[Any, Any]]:
        seen: list[tuple[Any, Any]] = []
        after = None
        for _ in range(count):
            with store(read_only=True) as uow:
                found = uow.cases.search(query, 51, after)
            seen += [(c.case_id, d) for c, d in found[:50]]
            if len(found) < 51:
                break
            last, deadline = found[49]
            after = (
                (grade_of(last.grade).rank, 0 if deadline else 1, deadline, last.case_id)
                if query.by_deadline
                else (last.created_at, last.case_id)
            )
        return seen

    queries: dict[str, CaseQuery] = {
        "newest first": CaseQuery(),
        "by deadline": CaseQuery(by_deadline=True),
        "a member's own": CaseQuery(party="BANKA"),
        "own by deadline": CaseQuery(party="BANKA", by_deadline=True),
        "institution": CaseQuery(institution="BANKB"),
        "account": CaseQuery(account=("BANKA", "6222000000001234")),
        "victim name": CaseQuery(victim_name_token=index.name_token("victim 1234")),
        "victim id": CaseQuery(victim_id_token=index.id_number_token("110101199000001234")),
        "time range": CaseQuery(
            created_from=T + timedelta(seconds=500), created_to=T + timedelta(seconds=600)
        ),
    }
    found = {name: pages(q) for name, q in queries.items()}
    # Three pages of 50 where there are that many; never a case twice across pages.
    for name in ("newest first", "by deadline", "a member's own", "own by deadline"):
        assert len(found[name]) == 150 and len({c for c, _ in found[name]}) == 150, name
    deadlines = [d for _, d in found["by deadline"]]
    assert deadlines == sorted(deadlines)
    assert [c for c, _ in found["account"]] == [f"C20260302-{1234:08X}"]
    assert [c for c, _ in found["victim id"]] == [f"C20260302-{1234:08X}"]
    assert len(found["time range"]) == 100
    with store(read_only=True) as uow:
        (hit,) = uow.cases.search(queries["victim name"], 10, None)
        assert hit[0].case_id == f"C20260302-{1234:08X}"
        first = uow.cases.search(queries["by deadline"], 3, None)
        assert [d for _, d in first] == sorted(d for _, d in first)
