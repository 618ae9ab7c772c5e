"""The store's batch queries the delivery router runs, on SQLite and PostgreSQL: many
institutions per statement, and each institution's rows still its own."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hub.crypto.keys import PrivateKey
from hub.domain.institutions import KeyState
from hub.service.admin import NewKey, Registry
from hub.service.ports import NewDelivery
from hub.store.sql import SqlStore
from hub.store.tables import deliveries
from hub.system.clock import ManualClock
from tests.integration.test_store import BLOB, T, members  # noqa: F401  (fixture)

HOUR = timedelta(hours=1)


def queue(store: SqlStore, *rows: tuple[str, bytes]) -> list[int]:
    with store() as uow:
        sequences = [uow.outbox.add(r, "order", None, e, T) for r, e in rows]
        uow.commit()
    return sequences


def test_pending_many_reads_the_first_rows_of_each_recipient_in_one_query(
    members: SqlStore,  # noqa: F811
) -> None:
    a1, b1, a2, a3, b2 = queue(
        members,
        ("BANKA", b"a1" + BLOB),
        ("BANKB", b"b1"),
        ("BANKA", b"a2"),
        ("BANKA", b"a3"),
        ("BANKB", b"b2"),
    )
    with members() as uow:
        uow.outbox.ack("BANKA", [a1], T)
        uow.commit()
    with members(read_only=True) as uow:
        got = uow.outbox.pending_many(["BANKA", "BANKB", "CENTRE"], 2)
        unacked = uow.outbox.unacked(["BANKA", "BANKB", "CENTRE"], 2)
        assert uow.outbox.pending_many([], 2) == {} and uow.outbox.unacked([], 2) == {}
    assert {code: [(d.sequence, d.envelope) for d in rows] for code, rows in got.items()} == {
        "BANKA": [(a2, b"a2"), (a3, b"a3")],
        "BANKB": [(b1, b"b1"), (b2, b"b2")],
        "CENTRE": [],
    }
    assert all(d.recipient == code for code, rows in got.items() for d in rows)
    assert unacked == {"BANKA": [a2, a3], "BANKB": [b1, b2], "CENTRE": []}
    with members(read_only=True) as uow:
        assert uow.outbox.unacked(["BANKA"], 1) == {"BANKA": [a2]}


def test_count_attempts_counts_unacknowledged_rows_and_returns_their_attempts(
    members: SqlStore,  # noqa: F811
) -> None:
    a1, a2, b1 = queue(members, ("BANKA", b"a1"), ("BANKA", b"a2"), ("BANKB", b"b1"))
    with members() as uow:
        assert uow.outbox.count_attempts([a1, a2], T) == {a1: 1, a2: 1}
        uow.commit()
    with members() as uow:
        uow.outbox.ack("BANKA", [a2], T)
        later = T + timedelta(seconds=5)
        assert uow.outbox.count_attempts([a1, a2, b1, 999_999], later) == {a1: 2, b1: 1}
        assert uow.outbox.count_attempts([], later) == {}
        uow.commit()
    with members(read_only=True) as uow:
        rows = {
            s: (n, first)
            for s, n, first in uow.session.execute(  # type: ignore[attr-defined]
                select(deliveries.c.sequence, deliveries.c.attempts, deliveries.c.first_sent_at)
            )
        }
    assert rows == {a1: (2, T), a2: (1, T), b1: (1, T + timedelta(seconds=5))}


def test_ack_many_touches_only_each_acknowledgers_own_rows(members: SqlStore) -> None:  # noqa: F811
    a1, a2, b1, b2 = queue(
        members, ("BANKA", b"a1"), ("BANKA", b"a2"), ("BANKB", b"b1"), ("BANKB", b"b2")
    )
    with members() as uow:
        counts = uow.outbox.ack_many(
            [
                ("BANKA", [a1, b1]),  # b1 is BANKB's: BANKA cannot acknowledge it
                ("BANKB", [b2]),
                ("BANKA", [a1, a2]),  # a1 counts for the first acknowledgement only
                ("PAYX", []),
            ],
            T,
        )
        uow.commit()
    assert counts == [1, 1, 1, 0]
    with members(read_only=True) as uow:
        assert uow.outbox.unacked(["BANKA", "BANKB"], 10) == {"BANKA": [], "BANKB": [b1]}


def test_key_states_of_many_members_in_one_query(members: SqlStore) -> None:  # noqa: F811
    registry = Registry(members, ManualClock(T))
    k0, k1, k2, k3 = (PrivateKey.generate() for _ in range(4))
    id1 = registry.add_key("BANKA", NewKey(k1.algorithm, k1.public_key))
    id2 = registry.add_key("BANKA", NewKey(k2.algorithm, k2.public_key))
    registry.revoke_key("BANKA", id1)
    id0 = registry.add_key("BANKB", NewKey(k0.algorithm, k0.public_key))
    id3, retired = registry.rotate_key("BANKB", NewKey(k3.algorithm, k3.public_key), HOUR)
    assert retired == [id0]
    with members(read_only=True) as uow:
        states = uow.institutions.key_states(["BANKA", "BANKB", "NOBODY"])
    assert states["BANKA"][id1][0] is KeyState.REVOKED
    assert states["BANKA"][id2] == (KeyState.ACTIVE, None)
    assert states["BANKB"] == {id0: (KeyState.ACTIVE, T + HOUR), id3: (KeyState.ACTIVE, None)}
    assert states["NOBODY"] == {}


def test_add_many_queues_rows_in_one_statement_in_order_the_sent_ones_counted(
    members: SqlStore,  # noqa: F811
) -> None:
    before = queue(members, ("BANKA", b"a0"))
    rows = [
        NewDelivery("BANKB", "order", "C1", b"b1", sent=True),
        NewDelivery("BANKA", "report_received", None, b"a1" + BLOB),
        NewDelivery("BANKB", "order", "C1", b"b2"),
    ]
    with members() as uow:
        sequences = uow.outbox.add_many(rows, T)
        assert uow.outbox.add_many([], T) == []
        uow.commit()
    assert sequences == sorted(sequences) and sequences[0] > before[0]
    with members(read_only=True) as uow:
        stored = {
            s: (r, e, a, f)
            for s, r, e, a, f in uow.session.execute(  # type: ignore[attr-defined]
                select(
                    deliveries.c.sequence,
                    deliveries.c.recipient,
                    deliveries.c.envelope,
                    deliveries.c.attempts,
                    deliveries.c.first_sent_at,
                ).where(deliveries.c.sequence.in_(sequences))
            )
        }
    assert [stored[s] for s in sequences] == [
        ("BANKB", b"b1", 1, T),
        ("BANKA", b"a1" + BLOB, 0, None),
        ("BANKB", b"b2", 0, None),
    ]
