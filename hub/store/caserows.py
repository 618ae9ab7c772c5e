"""A case's rows written and read with Core statements instead of the ORM (ADR 25).

Every report writes a case, its transactions and its first events. Through the ORM's flush
that cost more CPU than anything else a report does (topological sort of the mapped classes,
per-object state bookkeeping, one statement per table built through the ORM's persistence
layer): the intake profile of issue 22 put 28% of a report's samples in that flush. Here the
rows are taken from the objects as they are at the end of the command (the table's columns
are the attributes: the mapping is classical and names nothing differently) and written with
one prebuilt INSERT per table; then the objects join the session as persistent and clean, as
if loaded, so that anything done to them afterwards in the same transaction is the ORM's
business as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import BindParameter, Connection, Table, bindparam, select
from sqlalchemy.orm import Session, make_transient, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from hub.domain.cases import (
    Case,
    CaseEvent,
    FraudTransaction,
    OnwardTransfer,
    Order,
    TransactionFact,
)
from hub.domain.clocks import CaseClock
from hub.store.tables import (
    case_events,
    cases,
    clocks,
    fraud_transactions,
    onward_transfers,
    orders,
    transaction_facts,
)

# Built once: an INSERT built per call costs more than it executes (see sql.py).
_TABLES = (cases, fraud_transactions, case_events, orders, transaction_facts, onward_transfers)
_INSERTS = {t.name: t.insert() for t in (*_TABLES, clocks)}
_KEYS = {t.name: tuple(c.key for c in t.columns) for t in (*_TABLES, clocks)}


_BY_CASE: BindParameter[str] = bindparam("case_id")
_BY_ORDERS: BindParameter[list[str]] = bindparam("order_ids", expanding=True)
# The orders of the mapping's relationships (tables.py): the loaded lists come out the same.
SELECT_CASE = select(cases).where(cases.c.case_id == _BY_CASE)
SELECT_CASE_LOCKED = SELECT_CASE.with_for_update()
_SELECT_PARTS = (
    select(fraud_transactions)
    .where(fraud_transactions.c.case_id == _BY_CASE)
    .order_by(fraud_transactions.c.position),
    select(orders).where(orders.c.case_id == _BY_CASE).order_by(orders.c.order_id),
    select(case_events).where(case_events.c.case_id == _BY_CASE).order_by(case_events.c.sequence),
)
_SELECT_FACTS = (
    select(transaction_facts)
    .where(transaction_facts.c.order_id.in_(_BY_ORDERS))
    .order_by(transaction_facts.c.order_id, transaction_facts.c.position)
)
_SELECT_ONWARD = (
    select(onward_transfers)
    .where(onward_transfers.c.order_id.in_(_BY_ORDERS))
    .order_by(onward_transfers.c.order_id, onward_transfers.c.position)
)


def _rows(table: Table, objects: Iterable[Any]) -> list[dict[str, Any]]:
    keys = _KEYS[table.name]
    return [{k: getattr(o, k) for k in keys} for o in objects]


def insert_case(conn: Connection, case: Case) -> None:
    """Write `case` and everything it holds: one INSERT per table that has rows (several
    rows of one table go as one executemany, which SQLAlchemy sends as multi-row VALUES)."""
    case_id = case.case_id
    # What the ORM sets from the relationships when it flushes the children.
    for transaction in case.transactions:
        transaction.case_id = case_id
    for event in case.events:
        event.case_id = case_id
    for order in case.orders:
        order.case_id = case_id
        for fact in order.facts:
            fact.order_id = order.order_id
        for transfer in order.onward:
            transfer.order_id = order.order_id
    conn.execute(_INSERTS["cases"], _rows(cases, (case,))[0])
    parts: list[tuple[Table, list[Any]]] = [
        (fraud_transactions, case.transactions),
        (case_events, case.events),
        (orders, case.orders),
        (transaction_facts, [f for o in case.orders for f in o.facts]),
        (onward_transfers, [t for o in case.orders for t in o.onward]),
    ]
    for table, objects in parts:
        if objects:
            conn.execute(_INSERTS[table.name], _rows(table, objects))


def insert_clocks(conn: Connection, started: list[CaseClock]) -> None:
    """Write new clocks (each row is the clock's attributes), in one statement."""
    conn.execute(_INSERTS["clocks"], _rows(clocks, started))


def attach(session: Session, case: Case) -> None:
    """Make the written `case` (and its parts) persistent in `session` with nothing to flush,
    as a query would have loaded it."""
    for order in case.orders:
        _detached(*order.facts, *order.onward, order)
    _detached(*case.transactions, *case.events, case)
    session.add(case)


def _detached(*objects: object) -> None:
    for o in objects:
        make_transient_to_detached(o)


def load_case(session: Session, case_id: str, *, lock: bool) -> Case | Literal[False] | None:
    """`case_id`'s case read with Core statements and made persistent in `session`, as the
    ORM would have loaded it (`lock`: the case row FOR UPDATE first). False when the session
    already holds the case or any of its parts: then the ORM must answer, from what it holds.
    """
    if identity_key(Case, (case_id,)) in session.identity_map:
        return False
    conn = session.connection()
    row = conn.execute(SELECT_CASE_LOCKED if lock else SELECT_CASE, {"case_id": case_id})
    found = row.mappings().one_or_none()
    if found is None:
        return None
    key = {"case_id": case_id}
    transactions = [FraudTransaction(**r) for r in conn.execute(_SELECT_PARTS[0], key).mappings()]
    order_list = [Order(**r) for r in conn.execute(_SELECT_PARTS[1], key).mappings()]
    events = [CaseEvent(**r) for r in conn.execute(_SELECT_PARTS[2], key).mappings()]
    if order_list:
        by_id = {o.order_id: o for o in order_list}
        ids = {"order_ids": list(by_id)}
        for r in conn.execute(_SELECT_FACTS, ids).mappings():
            by_id[r["order_id"]].facts.append(TransactionFact(**r))
        for r in conn.execute(_SELECT_ONWARD, ids).mappings():
            by_id[r["order_id"]].onward.append(OnwardTransfer(**r))
    case = Case(**found, transactions=transactions, orders=order_list, events=events)
    if any(identity_key(instance=p) in session.identity_map for p in parts_of(case)[1:]):
        return False  # a part loaded on its own earlier: the session's copy is the truth
    attach(session, case)
    return case


def parts_of(case: Case) -> list[object]:
    """The case and every object it holds, as `attach` put them in the session."""
    found: list[object] = [case, *case.transactions, *case.events]
    for order in case.orders:
        found += [order, *order.facts, *order.onward]
    return found


class NewCases:
    """The cases and clocks a unit of work created, written at the latest moment that is
    still before anything could depend on them: before any flush of the ORM (an order or an
    SLA row names them), before the store reads cases or clocks, at the end of a savepoint,
    at the commit. A clock goes in after its case (its foreign key)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.queued: list[Case] = []
        self.clocks: list[CaseClock] = []
        # Written and attached inside the current savepoint: expunged if it rolls back.
        self.attached: list[Case] = []
        self.attached_clocks: list[CaseClock] = []
        self._mark: int | None = None
        self._before: tuple[list[Case], list[CaseClock]] = ([], [])

    def add(self, case: Case) -> None:
        self.queued.append(case)

    def add_clock(self, clock: CaseClock) -> None:
        self.clocks.append(clock)

    def write(self, *, except_id: str | None = None) -> None:
        """Write what is queued; `except_id`: a case (and its clocks) that may wait."""
        if not self.queued and not self.clocks:
            return
        waiting = [c for c in self.queued if c.case_id != except_id]
        started = [c for c in self.clocks if c.case_id != except_id]
        self.queued = [c for c in self.queued if c.case_id == except_id]
        self.clocks = [c for c in self.clocks if c.case_id == except_id]
        if not waiting and not started:
            return
        conn = self.session.connection()
        for case in waiting:
            insert_case(conn, case)
            attach(self.session, case)
        if started:
            insert_clocks(conn, started)
            for clock in started:
                make_transient_to_detached(clock)
                self.session.add(clock)
        if self._mark is not None:
            self.attached += waiting
            self.attached_clocks += started

    def pending(self, case_id: str) -> Case | None:
        return next((c for c in self.queued if c.case_id == case_id), None)

    def mark(self) -> None:
        self._before = (list(self.queued), list(self.clocks))
        self._mark = len(self.queued)
        self.attached = []
        self.attached_clocks = []

    def release(self) -> None:
        self._mark = None
        self.attached = []
        self.attached_clocks = []

    def rollback_to_mark(self) -> None:
        """The savepoint rolled back: the rows written inside it are gone. Its own cases and
        clocks leave the queue; those queued before it are queued again, to be written later."""
        assert self._mark is not None
        parts: list[object] = [*self.attached_clocks]
        for case in self.attached:
            parts += parts_of(case)
        for part in parts:
            if part in self.session:
                self.session.expunge(part)
            make_transient(part)
        self.queued, self.clocks = self._before
        self.release()

    def discard(self) -> None:
        self.queued.clear()
        self.clocks.clear()
        self.attached = []
        self.attached_clocks = []
