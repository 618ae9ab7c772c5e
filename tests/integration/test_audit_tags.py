"""The hub's tag on each audit entry (issue 21, docs/audit.md "The hub's tag on each entry"),
on a real database (SQLite and PostgreSQL): entries the hub writes carry tags that verify;
an insider with full access to the database but not to the hub's data keys cannot add,
rewrite, duplicate or swap an entry without the sequencer refusing it or `audit verify`
naming it FORGED; a log upgraded from revision 0014 keeps its first entries untagged and
verifies."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Engine, MetaData, Table, column, insert, select, table, update
from sqlalchemy.engine import Connection

from hub.bootstrap import alembic_config, ensure_hub_registered
from hub.cli import main
from hub.crypto import audittag, fields
from hub.crypto.keys import PrivateKey
from hub.crypto.public import public_key_to_pem
from hub.domain.auditleaf import micros
from hub.domain.merkle import CompactRange
from hub.service import auditlog, audittags, auditverify
from hub.service.admin import Registry
from hub.service.pipeline import Hub
from hub.service.ports import AuditEntry, AuditRecord, LogState
from hub.store.sql import SqlStore, make_engine
from hub.store.tables import audit_checkpoints, audit_log_state
from hub.system.clock import ManualClock
from tests.support import add_members

from .test_audit_log import activity, logged, verify
from .test_hub_on_db import MEMBERS, Net, RecordingNotifier, net  # noqa: F401  (the fixture)

# Every column of a row, untyped: values travel as the database keeps them (sealed values
# stay sealed), as an insider without the data keys copies them.
CONTENT = (
    "recorded_at",
    "kind",
    "actor",
    "message_id",
    "case_id",
    "order_id",
    "payload",
    "detail",
)
RAW = table(
    "audit_log",
    *(column(c) for c in ("id", *CONTENT, "log_index", "leaf_hash", "tag_key", "tag")),
    column("refused_at"),
)


def raw_row(conn: Connection, **where: Any) -> dict[str, Any]:
    stmt = select(RAW)
    for name, value in where.items():
        stmt = stmt.where(RAW.c[name] == value)
    return dict(conn.execute(stmt).one()._mapping)


def tag_ok(record: Any) -> bool:
    return (
        audittag.KEYS.problem(record.tag_key, record.tag, *auditlog.entry_fields(record)) == ""
        and record.tag_key == fields.keyring().current
    )


def forged(result: auditverify.Verification) -> dict[int | None, str]:
    return {f.entry_id: f.detail for f in result.findings if f.what == "forged"}


def cli_verify(net: Net) -> Any:  # noqa: F811
    """`stophub audit verify` as an auditor runs it, with the hub's public key as a file."""
    folder = Path(tempfile.mkdtemp(prefix="stophub-hub-key-"))
    key = folder / "hub.pub"
    key.write_bytes(public_key_to_pem(net.hub_key.algorithm, net.hub_key.public_key))
    try:
        return CliRunner().invoke(
            main, ["audit", "verify", "--db", str(net.store.url), "--hub-key", str(key)]
        )
    finally:
        shutil.rmtree(folder)


# ---- the hub's own entries --------------------------------------------------------------------


def test_entries_the_hub_writes_carry_tags_that_verify(net: Net) -> None:  # noqa: F811
    logged(net)
    with net.store(read_only=True) as uow:
        records = [r.record for r in auditverify.read_all(uow)]
        state = uow.audit.log_state()
    assert len(records) > 10 and all(tag_ok(r) for r in records)
    assert (state.size, state.untagged_entries) == (len(records), 0)
    result = verify(net)
    assert result.ok and not forged(result), result.findings


def test_a_rolled_back_savepoint_leaves_every_committed_entry_tagged(net: Net) -> None:  # noqa: F811
    """Rows flushed inside a savepoint that rolls back are queued again: written later under
    new ids, each with the tag of its own id."""
    now = net.clock.now()
    with net.store() as uow:
        uow.audit.append(AuditEntry("clock", "HUB", "a", "before the savepoint"), now)
        with pytest.raises(RuntimeError), uow.savepoint():  # type: ignore[attr-defined]
            uow.audit.append(AuditEntry("clock", "HUB", "b", "inside, rolled back"), now)
            uow.audit.unsequenced(1)  # a read flushes the queued rows into the savepoint
            raise RuntimeError("the block fails")
        uow.audit.unsequenced(1)
        uow.audit.append(AuditEntry("clock", "HUB", "c", "after it"), now)
        uow.commit()
    with net.store(read_only=True) as uow:
        records = [r.record for r in auditverify.read_all(uow)]
    assert [r.entry.message_id for r in records if r.entry.message_id] == ["a", "c"]
    assert all(tag_ok(r) for r in records)
    assert auditlog.sequence(net.store, net.clock) == len(records)
    assert verify(net).ok


def test_the_time_tagged_is_the_time_stored(net: Net) -> None:  # noqa: F811
    """Micro-seconds survive both backends: the tag is made from the time before it is
    written and checked from the time read back."""
    net.clock.set(net.clock.now() + timedelta(microseconds=999_999))
    with net.store() as uow:
        uow.audit.append(AuditEntry("clock", "HUB", "t", "odd micros"), net.clock.now())
        uow.commit()
    with net.store(read_only=True) as uow:
        [record] = [r.record for r in auditverify.read_all(uow) if r.record.entry.message_id == "t"]
    assert micros(record.recorded_at) == micros(net.clock.now())
    assert tag_ok(record)


# ---- an insider without the keys --------------------------------------------------------------


def _next_id(conn: Connection) -> int:
    return int(conn.execute(select(RAW.c.id).order_by(RAW.c.id.desc()).limit(1)).scalar_one()) + 1


def append_untagged(engine: Engine) -> int:
    """A new entry, its content copied from another one (a sealed detail copied opens), with
    no tag."""
    with engine.begin() as conn:
        row = raw_row(conn, log_index=1)
        new = {**{c: row[c] for c in CONTENT}, "id": _next_id(conn), "actor": "MALLORY"}
        conn.execute(insert(RAW).values(**new))
        return int(new["id"])


def append_with_copied_tag(engine: Engine) -> int:
    with engine.begin() as conn:
        row = raw_row(conn, log_index=1)
        new = {c: row[c] for c in (*CONTENT, "tag_key", "tag")}
        new["id"] = _next_id(conn)
        conn.execute(insert(RAW).values(**new))
        return int(new["id"])


def append_under_unknown_key(engine: Engine) -> int:
    with engine.begin() as conn:
        row = raw_row(conn, log_index=1)
        new = {c: row[c] for c in (*CONTENT, "tag")}
        new.update(id=_next_id(conn), tag_key="dk-mallory")
        conn.execute(insert(RAW).values(**new))
        return int(new["id"])


def append_garbled(engine: Engine) -> int:
    """A copy whose sealed detail has one byte flipped: it does not open. The sequencer
    refuses it and goes on placing the entries after it."""
    with engine.begin() as conn:
        row = raw_row(conn, log_index=1)
        new = {c: row[c] for c in (*CONTENT, "tag_key", "tag")}
        sealed = bytes(new["detail"])
        new.update(id=_next_id(conn), detail=sealed[:-1] + bytes([sealed[-1] ^ 1]))
        conn.execute(insert(RAW).values(**new))
        return int(new["id"])


def append_text_tag(engine: Engine) -> int:
    """A tag written as text: SQLite keeps it as text, which must not stop anything."""
    with engine.begin() as conn:
        row = raw_row(conn, log_index=1)
        new = {c: row[c] for c in (*CONTENT, "tag_key")}
        new.update(id=_next_id(conn), tag="x" * 32)
        conn.execute(insert(RAW).values(**new))
        return int(new["id"])


def duplicate_under_new_id(engine: Engine) -> int:
    """An exact copy of an entry, tag and all, under a new id."""
    with engine.begin() as conn:
        row = raw_row(conn, log_index=2)
        new = {c: row[c] for c in (*CONTENT, "tag_key", "tag")}
        new["id"] = _next_id(conn)
        conn.execute(insert(RAW).values(**new))
        return int(new["id"])


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (append_untagged, "it carries no tag"),
        (append_with_copied_tag, "its tag does not verify"),
        (append_under_unknown_key, "under data key 'dk-mallory', which is not in the keyring"),
        (duplicate_under_new_id, "its tag does not verify"),
        (append_garbled, "its content does not open"),
        (append_text_tag, "its tag does not verify"),
    ],
    ids=["no-tag", "copied-tag", "unknown-key", "duplicate", "garbled", "text-tag"],
)
def test_an_appended_entry_is_refused_by_the_sequencer_and_named_forged(
    net: Net,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    forge: Callable[[Engine], int],
    reason: str,
) -> None:
    logged(net)
    entry_id = forge(net.store.engine)
    before = audittags.refused_total()
    # Before the sequencer sees it, verify already names it.
    assert entry_id in forged(verify(net))
    net.clock.advance(timedelta(minutes=2))
    activity(net, 1)  # the hub goes on writing: its own entries are placed around it
    with caplog.at_level(logging.ERROR, logger="hub.service.auditlog"):
        placed = auditlog.sequence(net.store, net.clock)
    assert placed > 0
    assert audittags.refused_total() == before + 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line.startswith(f"audit log: entry {entry_id} refused: ") and reason in line
    assert "written by something other than the hub?" in line
    cp = auditlog.checkpoint(net.store, net.hub_key, net.clock)
    assert cp is not None
    with net.store.engine.connect() as conn:
        row = raw_row(conn, id=entry_id)
        top = conn.execute(select(audit_checkpoints.c.tree_size).order_by(
            audit_checkpoints.c.tree_size.desc()).limit(1)).scalar_one()  # fmt: skip
        placed_ids = {
            r.id for r in conn.execute(select(RAW.c.id).where(RAW.c.log_index < top)).all()
        }
    assert row["log_index"] is None and row["refused_at"] is not None
    assert entry_id not in placed_ids  # never in a checkpoint
    # Refused once, never again, never placed: the next runs pass it by.
    assert auditlog.sequence(net.store, net.clock) == 0
    result = verify(net)
    assert not result.ok
    found = forged(result)
    assert list(found) == [entry_id], result.findings
    assert "refused by the sequencer at" in found[entry_id]
    assert not [f for f in result.findings if f.what == "unsequenced"]
    shown = cli_verify(net)
    assert shown.exit_code == 1 and "FORGED" in shown.output, shown.output
    assert f"entry {entry_id}" in shown.output


def test_an_entry_appended_and_placed_with_its_leaf_and_state_row_is_forged(
    net: Net,  # noqa: F811
) -> None:
    """The insider also places the entry: right leaf at the next position, the state row's
    tree extended. Leaf and tree agree; the tag does not."""
    logged(net)
    entry_id = append_with_copied_tag(net.store.engine)
    with net.store() as uow:
        state = uow.audit.log_state()
        [record] = [r.record for r in uow.audit.logged(entry_id - 1, 1)]
        tree = auditlog.tree_of(state)
        leaf = auditlog.entry_leaf(tree.size, record)
        uow.audit.assign([(entry_id, tree.size, leaf)])
        tree.append(leaf)
        uow.audit.set_log_state(LogState(tree.size, tree.root(), b"".join(tree.nodes)))
        uow.commit()
    result = verify(net)
    assert {f.what for f in result.findings} == {"forged"}, result.findings
    assert f"at position {tree.size - 1}" in forged(result)[entry_id]


def test_an_untagged_entry_placed_by_hand_with_the_untagged_count_raised_is_forged(
    net: Net,  # noqa: F811
) -> None:
    """The insider places an untagged entry after the newest checkpoint himself and raises the
    state row's untagged count over it: the checkpoints the hub signed say how many untagged
    entries there are, and the state row's word does not reach past them."""
    logged(net)
    entry_id = append_untagged(net.store.engine)
    with net.store() as uow:
        state = uow.audit.log_state()
        [record] = [r.record for r in uow.audit.logged(entry_id - 1, 1)]
        tree = auditlog.tree_of(state)
        leaf = auditlog.entry_leaf(tree.size, record)
        uow.audit.assign([(entry_id, tree.size, leaf)])
        tree.append(leaf)
        uow.audit.set_log_state(
            LogState(
                tree.size,
                tree.root(),
                b"".join(tree.nodes),
                untagged_below_id=entry_id + 1,
                untagged_entries=tree.size,
            )
        )
        uow.commit()
    result = verify(net)
    found = forged(result)
    assert list(found) == [entry_id], result.findings
    assert "it carries no tag" in found[entry_id]


def rewrite_with_leaf(net: Net) -> list[int]:  # noqa: F811
    """An entry's content and its stored leaf both rewritten (the leaf computed right)."""
    with net.store.engine.begin() as conn:
        entry_id = int(raw_row(conn, log_index=6)["id"])
    with net.store(read_only=True) as uow:
        [logged_] = uow.audit.logged(entry_id - 1, 1)
    record = logged_.record
    changed = AuditEntry(**{**record.entry.__dict__, "actor": "MALLORY"})
    leaf = auditlog.entry_leaf(6, AuditRecord(entry_id, record.recorded_at, changed))
    with net.store.engine.begin() as conn:
        conn.execute(
            update(RAW).where(RAW.c.id == entry_id).values(actor="MALLORY", leaf_hash=leaf)
        )
    return [entry_id]


def swap_contents(net: Net) -> list[int]:  # noqa: F811
    """Two entries' contents (tags included) swapped, their ids and places kept."""
    with net.store.engine.begin() as conn:
        a, b = raw_row(conn, log_index=3), raw_row(conn, log_index=5)
        moved = (*CONTENT, "tag_key", "tag")
        conn.execute(update(RAW).where(RAW.c.id == a["id"]).values(**{c: b[c] for c in moved}))
        conn.execute(update(RAW).where(RAW.c.id == b["id"]).values(**{c: a[c] for c in moved}))
    return [int(a["id"]), int(b["id"])]


@pytest.mark.parametrize("tamper", [rewrite_with_leaf, swap_contents], ids=["rewrite", "swap"])
def test_a_rewritten_entry_is_forged(net: Net, tamper: Callable[[Net], list[int]]) -> None:  # noqa: F811
    logged(net)
    ids = tamper(net)
    result = verify(net)
    found = forged(result)
    assert sorted(i for i in found if i in ids) == sorted(ids), result.findings
    for entry_id in ids:
        assert "its tag does not verify" in found[entry_id]
    shown = cli_verify(net)
    assert shown.exit_code == 1 and "FORGED" in shown.output


def test_an_untagged_entry_after_tagged_ones_is_refused(net: Net) -> None:  # noqa: F811
    """Raising untagged_below_id (as if the entry were from before revision 0015) does not
    help once tagged entries are placed: untagged entries only open a tree."""
    logged(net)
    entry_id = append_untagged(net.store.engine)
    with net.store.engine.begin() as conn:
        conn.execute(update(audit_log_state).values(untagged_below_id=entry_id + 10))
    assert auditlog.sequence(net.store, net.clock) == 0
    with net.store(read_only=True) as uow:
        assert uow.audit.log_state().untagged_entries == 0
    found = forged(verify(net))
    assert list(found) == [entry_id]


# ---- a log upgraded from revision 0014 --------------------------------------------------------


@pytest.fixture
def upgraded(database_url: str, clock: ManualClock) -> Iterator[tuple[Net, list[int]]]:
    """A database at revision 0014 with five entries written (three placed by the sequencer
    of that time, two not yet), then upgraded to the head."""
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0014")
    engine = make_engine(database_url)
    now = clock.now()
    try:
        with engine.begin() as conn:
            log = Table("audit_log", MetaData(), autoload_with=conn)
            rows = [
                {
                    "recorded_at": now + timedelta(microseconds=i * 7),
                    "kind": "clock",
                    "actor": "HUB",
                    "message_id": f"old-{i}",
                    "detail": fields.seal(f"before 0015: {i}".encode(), "audit_log.detail"),
                    "payload": fields.seal(b"envelope", "audit_log.payload") if i == 1 else None,
                }
                for i in range(5)
            ]
            conn.execute(insert(log), rows)
            ids = [int(i) for i in conn.execute(select(log.c.id).order_by(log.c.id)).scalars()]
            tree = CompactRange()
            for index, (entry_id, row) in enumerate(zip(ids[:3], rows, strict=False)):
                record = AuditRecord(
                    entry_id,
                    row["recorded_at"],
                    AuditEntry(
                        "clock",
                        "HUB",
                        row["message_id"],
                        f"before 0015: {index}",
                        payload=b"envelope" if index == 1 else None,
                    ),
                )
                leaf = auditlog.entry_leaf(index, record)
                conn.execute(
                    update(log).where(log.c.id == entry_id).values(log_index=index, leaf_hash=leaf)
                )
                tree.append(leaf)
            state = Table("audit_log_state", MetaData(), autoload_with=conn)
            conn.execute(
                insert(state).values(
                    id=1,
                    tree_size=tree.size,
                    root_hash=tree.root(),
                    compact_range=b"".join(tree.nodes),
                )
            )
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
    store = SqlStore(database_url)
    try:
        hub_key = PrivateKey.generate()
        ensure_hub_registered(store, hub_key, clock)
        notifier = RecordingNotifier()
        result = Net(Hub(store, clock, hub_key, notifier), store, clock, hub_key, notifier)
        result.keys.update(add_members(Registry(store, clock), MEMBERS))
        yield result, ids
    finally:
        store.dispose()


def test_a_log_upgraded_from_0014_keeps_its_first_entries_untagged(
    upgraded: tuple[Net, list[int]],
) -> None:
    net_, old_ids = upgraded
    with net_.store(read_only=True) as uow:
        state = uow.audit.log_state()
    # The revision marks every entry written before it, and the positions already placed.
    assert (state.size, state.untagged_below_id, state.untagged_entries) == (
        3,
        old_ids[-1] + 1,
        3,
    )
    # Before the sequencer runs again, the waiting untagged entries are not forgeries.
    assert not forged(verify(net_))
    activity(net_, 2)
    assert auditlog.sequence(net_.store, net_.clock) > 2
    with net_.store(read_only=True) as uow:
        state = uow.audit.log_state()
        records = list(auditverify.read_all(uow))
    # The two old entries the old sequencer had not placed took the next places, untagged;
    # the hub's new entries follow, tagged. The count covers every untagged position.
    assert state.untagged_entries == 5
    by_id = {r.record.entry_id: r for r in records}
    assert [by_id[i].log_index for i in old_ids] == [0, 1, 2, 3, 4]
    assert all(by_id[i].record.tag is None for i in old_ids)
    newer = [r for r in records if r.record.entry_id not in old_ids]
    assert newer and all(tag_ok(r.record) and (r.log_index or 0) >= 5 for r in newer)
    assert auditlog.checkpoint(net_.store, net_.hub_key, net_.clock, every=None) is not None
    result = verify(net_)
    assert result.ok and not result.findings, result.findings
    # The untagged prefix is what the caller trusts, not what the state row says: fewer
    # untagged positions allowed name the rest.
    fewer = auditverify.verify_store(
        net_.store,
        {net_.hub_key.key_id: net_.hub_key.public_key}.get,
        untagged_entries=3,
    )
    assert sorted(i for i in forged(fewer) if i is not None) == old_ids[3:]
    shown = cli_verify(net_)
    assert shown.exit_code == 0, shown.output
