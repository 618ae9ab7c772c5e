"""Issue 21: evidence that survives a hostile database. Each attack of someone with the whole
database but not the hub's keys, made on a real database (SQLite and PostgreSQL) and then on a
full JSON Lines export, is caught by `stophub audit verify` / `verify-export` and named (exit
1, the finding in the text and in --json); an honest hub that restarted, rotated its key with
an endorsement or was checked while serving gets no finding; a check that cannot be made
exits 2."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, LargeBinary, delete, func, insert, select, type_coerce, update

from hub.bootstrap import ensure_hub_registered
from hub.cli import main
from hub.crypto.checkpoint import open_checkpoint
from hub.crypto.keys import PrivateKey
from hub.crypto.public import public_key_to_pem
from hub.domain.errors import DomainError
from hub.domain.merkle import CompactRange
from hub.service import auditlog, auditverify, trust
from hub.service.admin import NewKey, Registry
from hub.service.commands import audit as au
from hub.service.commands.case import CREATE_REPORT
from hub.service.pipeline import Hub
from hub.service.ports import AuditEntry, AuditRecord
from hub.store.tables import (
    audit_checkpoints,
    audit_log,
    audit_log_nodes,
    audit_log_state,
    hub_key_endorsements,
)
from stophub.v1 import audit_pb2, case_pb2
from tests.unit.test_handlers import MULE_B, report_body

from .test_hub_on_db import Net, net  # noqa: F401  (the fixture)

# The hub signs a checkpoint at least every minute the tree grew; rounds of activity this far
# apart make the schedule rule (docs/audit.md) decide when checkpoints are deleted.
ROUND = timedelta(minutes=4)
ROUNDS = 5
AUDIT_TABLES = (audit_log, audit_log_state, audit_checkpoints, audit_log_nodes)


@dataclass
class Log:
    """A hub's log after ROUNDS rounds of activity, each checkpointed, and where the auditor
    keeps things."""

    net: Net
    tmp: Path
    pub: str
    sizes: list[int]  # the size of each round's checkpoint
    snapshots: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    kept: dict[int, str] = field(default_factory=dict)  # round -> kept checkpoint file

    @property
    def engine(self) -> Engine:
        return self.net.store.engine

    @property
    def url(self) -> str:
        return str(self.net.store.url)


def activity(net: Net, reports: int = 2) -> None:  # noqa: F811
    for _ in range(reports):
        net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def keep(log: Log, name: str) -> str:
    out = log.tmp / f"{name}.json"
    shown = run("audit", "checkpoint", "--db", log.url, "--hub-key", log.pub, "--out", str(out))
    assert shown.exit_code == 0, shown.output
    return str(out)


@pytest.fixture
def hub_log(net: Net, tmp_path: Path) -> Log:  # noqa: F811
    pub = tmp_path / "hub.pub"
    pub.write_bytes(public_key_to_pem(net.hub_key.algorithm, net.hub_key.public_key))
    log = Log(net, tmp_path, str(pub), [])
    for r in range(ROUNDS):
        activity(net)
        net.clock.set(net.clock.now() + ROUND)
        net.hub.keep_audit_log()
        with net.store(read_only=True) as uow:
            log.sizes.append(uow.audit.checkpoints()[-1].tree_size)
        log.snapshots[r] = snapshot(log.engine)
        log.kept[r] = keep(log, f"round-{r}")
    assert sorted(set(log.sizes)) == log.sizes  # each round grew the tree and was signed
    return log


# ---- what the attacker does with the database --------------------------------------------------


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        return {t.name: [r._asdict() for r in conn.execute(select(t))] for t in AUDIT_TABLES}


def restore(engine: Engine, snap: dict[str, list[dict[str, Any]]]) -> None:
    """The audit tables as they were at `snap`: a database restored from an older copy."""
    with engine.begin() as conn:
        for t in AUDIT_TABLES:
            conn.execute(delete(t))
        for t in AUDIT_TABLES:
            if snap[t.name]:
                conn.execute(insert(t), snap[t.name])


def leaves(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [
            bytes(r[0])
            for r in conn.execute(
                select(audit_log.c.leaf_hash)
                .where(audit_log.c.log_index.is_not(None))
                .order_by(audit_log.c.log_index)
            )
        ]


def restate(engine: Engine, size: int | None = None) -> None:
    """The state row rewritten to the tree the stored leaves make (its first `size`)."""
    tree = CompactRange()
    tree.extend(leaves(engine)[:size])
    with engine.begin() as conn:
        conn.execute(
            update(audit_log_state).values(
                tree_size=tree.size, root_hash=tree.root(), compact_range=b"".join(tree.nodes)
            )
        )


def drop_checkpoints(engine: Engine, above: int = -1) -> None:
    with engine.begin() as conn:
        conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.tree_size > above))


def rewrite_with_leaf(engine: Engine, index: int) -> None:
    """An entry changed and its stored leaf recomputed, as a careful forger would."""
    with engine.begin() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.log_index == index)).one()
        record = AuditRecord(
            row.id,
            row.recorded_at,
            AuditEntry(
                kind=row.kind,
                actor="MALLORY",
                message_id=row.message_id,
                detail=row.detail,
                payload=row.payload,
                case_id=row.case_id,
                order_id=row.order_id,
            ),
        )
        conn.execute(
            update(audit_log)
            .where(audit_log.c.id == row.id)
            .values(actor="MALLORY", leaf_hash=auditlog.entry_leaf(index, record))
        )


def truncate(log: Log, keep_entries: int) -> None:
    """The last entries deleted and the state row rewound to the rest."""
    with log.engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.log_index >= keep_entries))
    restate(log.engine)


def insert_mid_log(log: Log, index: int) -> None:
    """A new entry put at `index`, the later ones shifted, every leaf and the state row
    recomputed: each entry then matches its leaf."""
    engine = log.engine
    with engine.begin() as conn:
        size = conn.execute(select(func.max(audit_log.c.log_index))).scalar_one() + 1
        for i in range(size - 1, index - 1, -1):
            conn.execute(
                update(audit_log).where(audit_log.c.log_index == i).values(log_index=i + 1)
            )
        row = conn.execute(select(audit_log).where(audit_log.c.log_index == index + 1)).one()
        copy = row._asdict()
        copy.pop("id")
        conn.execute(
            insert(audit_log).values(
                **{**copy, "log_index": index, "actor": "MALLORY", "detail": "backdated"}
            )
        )
    with log.net.store(read_only=True) as uow:
        placed = list(uow.audit.placed(index, 1_000_000))
    with engine.begin() as conn:
        for logged in placed:
            assert logged.log_index is not None
            conn.execute(
                update(audit_log)
                .where(audit_log.c.id == logged.record.entry_id)
                .values(leaf_hash=auditlog.entry_leaf(logged.log_index, logged.record))
            )
    restate(engine)


def mallory_signs(log: Log) -> PrivateKey:
    """A key of the attacker's added to the registry as the hub's, and checkpoints signed with
    it over a rewritten log (the hub's own deleted)."""
    mallory = PrivateKey.generate()
    Registry(log.net.store, log.net.clock).add_key(
        "HUB", NewKey(mallory.algorithm, mallory.public_key)
    )
    rewrite_with_leaf(log.engine, 3)
    restate(log.engine)
    drop_checkpoints(log.engine)
    assert auditlog.checkpoint(log.net.store, mallory, log.net.clock, every=None) is not None
    return mallory


class Posing:
    """Signs with one key while naming another (an endorsement that claims the hub's key)."""

    def __init__(self, key: PrivateKey, as_key_id: str) -> None:
        self.key, self.as_key_id = key, as_key_id

    @property
    def algorithm(self) -> str:
        return self.key.algorithm

    @property
    def key_id(self) -> str:
        return self.as_key_id

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def forge_endorsement(log: Log) -> None:
    mallory = mallory_signs(log)
    row = trust.endorse(
        Posing(mallory, log.net.hub_key.key_id),
        mallory.algorithm,
        mallory.public_key,
        log.net.clock.now(),
    )
    with log.net.store() as uow:
        uow.audit.add_endorsement(row)
        uow.commit()


def append_forged(log: Log) -> None:
    """An entry appended at the end with its leaf, and the state row updated to it."""
    with log.engine.begin() as conn:
        size = conn.execute(select(func.max(audit_log.c.log_index))).scalar_one() + 1
        row = conn.execute(select(audit_log).where(audit_log.c.log_index == 2)).one()._asdict()
        row.pop("id")
        new_id = conn.execute(
            insert(audit_log)
            .values(**{**row, "log_index": size, "actor": "MALLORY", "detail": "forged"})
            .returning(audit_log.c.id)
        ).scalar_one()
    with log.net.store(read_only=True) as uow:
        [logged] = [x for x in uow.audit.placed(size, 1) if x.record.entry_id == new_id]
    with log.engine.begin() as conn:
        conn.execute(
            update(audit_log)
            .where(audit_log.c.id == new_id)
            .values(leaf_hash=auditlog.entry_leaf(size, logged.record))
        )
    restate(log.engine)


def garble_sealed_detail(engine: Engine, index: int = 8) -> None:
    with engine.begin() as conn:
        [(sealed,)] = conn.execute(
            select(type_coerce(audit_log.c.detail, LargeBinary)).where(
                audit_log.c.log_index == index
            )
        )
        garbled = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])
        conn.execute(
            update(audit_log)
            .where(audit_log.c.log_index == index)
            .values(detail=type_coerce(garbled, LargeBinary))
        )


def fork(log: Log) -> None:
    """The database restored to round 2's copy and extended, by a hub restarted on it (it
    remembers nothing), with other entries past the size the auditor kept."""
    restore(log.engine, log.snapshots[2])
    net = log.net  # noqa: F811
    restarted = Hub(net.store, net.clock, net.hub_key, net.notifier)
    with net.store(read_only=True) as uow:
        size = uow.audit.log_state().size
    while size <= log.sizes[-1]:
        activity(net, 3)
        net.clock.set(net.clock.now() + ROUND)
        restarted.keep_audit_log()
        with net.store(read_only=True) as uow:
            size = uow.audit.log_state().size


# (name, attack, what verify must name, the kept checkpoints given: rounds)
Attack = tuple[str, Callable[[Log], None], str, tuple[int, ...]]
ATTACKS: list[Attack] = [
    (
        "truncated-with-a-kept-checkpoint",
        lambda log: (truncate(log, log.sizes[3] - 2), drop_checkpoints(log.engine, log.sizes[2])),
        "rollback",
        (3,),
    ),
    (
        "truncated-checkpoints-deleted-by-the-schedule",
        lambda log: (truncate(log, log.sizes[4] - 2), drop_checkpoints(log.engine, log.sizes[2])),
        "checkpoint_missing",
        (),
    ),
    (
        "truncated-state-rewound-checkpoints-left",
        lambda log: truncate(log, log.sizes[3] - 2),
        "rollback",
        (),
    ),
    (
        "every-checkpoint-deleted",
        lambda log: drop_checkpoints(log.engine),
        "checkpoint_missing",
        (),
    ),
    (
        "every-checkpoint-deleted-entry-rewritten-with-leaf",
        lambda log: (
            drop_checkpoints(log.engine),
            rewrite_with_leaf(log.engine, 3),
            restate(log.engine),
        ),
        "checkpoint_missing",
        (),
    ),
    (
        "every-checkpoint-deleted-entry-rewritten-kept",
        lambda log: (
            drop_checkpoints(log.engine),
            rewrite_with_leaf(log.engine, 3),
            restate(log.engine),
        ),
        "fork",
        (1,),
    ),
    (
        "later-checkpoints-deleted-entry-after-rewritten",
        lambda log: (
            drop_checkpoints(log.engine, log.sizes[2]),
            rewrite_with_leaf(log.engine, log.sizes[4] - 1),
            restate(log.engine),
        ),
        "checkpoint_missing",
        (),
    ),
    (
        "a-middle-checkpoint-deleted",
        lambda log: drop_checkpoints_between(log, log.sizes[1], log.sizes[2]),
        "checkpoint_missing",
        (),
    ),
    (
        "rolled-back-to-an-earlier-copy",
        lambda log: restore(log.engine, log.snapshots[2]),
        "rollback",
        (4,),
    ),
    ("rolled-back-and-extended-otherwise", fork, "fork", (4,)),
    ("hub-key-added-and-checkpoints-re-signed", mallory_signs, "checkpoint", ()),
    ("endorsement-forged", forge_endorsement, "endorsement", ()),
    (
        "checkpoint-larger-than-the-state-row",
        lambda log: restate(log.engine, log.sizes[2]),
        "rollback",
        (),
    ),
    (
        "inserted-mid-log-leaves-recomputed",
        lambda log: insert_mid_log(log, 5),
        "checkpoint",
        (),
    ),
]


def drop_checkpoints_between(log: Log, above: int, upto: int) -> None:
    with log.engine.begin() as conn:
        conn.execute(
            delete(audit_checkpoints).where(
                audit_checkpoints.c.tree_size > above, audit_checkpoints.c.tree_size <= upto
            )
        )


# ---- checking ------------------------------------------------------------------------------------


def verify(log: Log, *extra: str, export: Path | None = None) -> tuple[Result, Result]:
    """The CLI's text and --json answers, which must agree on the exit status."""
    if export is None:
        args = ["audit", "verify", "--db", log.url, "--hub-key", log.pub, *extra]
    else:
        args = ["audit", "verify-export", "--export", str(export), "--hub-key", log.pub, *extra]
    text, as_json = run(*args), run(*args, "--json")
    assert text.exit_code == as_json.exit_code, (text.output, as_json.output)
    for shown in (text, as_json):
        assert "Traceback" not in shown.output
        assert shown.exception is None or isinstance(shown.exception, SystemExit), shown.output
    return text, as_json


def kept_args(log: Log, rounds: tuple[int, ...]) -> list[str]:
    return [a for r in rounds for a in ("--trusted-checkpoint", log.kept[r])]


def assert_named(text: Result, as_json: Result, what: str) -> dict[str, Any]:
    assert text.exit_code == 1, text.output
    assert f"{what.upper()}:" in text.output, text.output
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert what in {p["what"] for p in document["problems"]}, document["problems"]
    return dict(document)


def export(log: Log, name: str) -> Path:
    path = log.tmp / f"{name}.jsonl"
    shown = run(
        "audit", "export", "--db", log.url, "--format", "jsonl", "--out", str(path),
        "--personal-data",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    return path


def test_an_honest_log_verifies_with_every_kept_checkpoint(hub_log: Log) -> None:
    log = hub_log
    text, as_json = verify(log, "--trusted-checkpoint", str(log.tmp))
    assert text.exit_code == 0, text.output
    assert f"{ROUNDS} checkpoint(s) verified, 0 failed" in text.output
    assert text.output.count("consistent: the log still holds it") == ROUNDS
    document = json.loads(as_json.stdout)
    assert document["ok"] and document["checkpoints"] == ROUNDS
    assert document["checkpoints_failed"] == 0 and document["problems"] == []
    assert [k["outcome"] for k in document["kept"]] == ["consistent"] * ROUNDS
    # The export says the same, offline.
    text, _ = verify(log, "--trusted-checkpoint", str(log.tmp), export=export(log, "honest"))
    assert text.exit_code == 0, text.output
    # Each checkpoint names its predecessor, as signed.
    with log.net.store(read_only=True) as uow:
        rows = uow.audit.checkpoints()
    keys = {log.net.hub_key.key_id: log.net.hub_key.public_key}
    signed = [open_checkpoint(r.envelope, keys.get) for r in rows]
    assert auditverify.signed_untagged(rows, keys.get) == 0  # a log tagged from its start
    assert auditverify.signed_untagged(rows, {}.get) is None  # no trusted checkpoint: unknown
    assert [(c.previous_tree_size, c.previous_root_hash) for c in signed] == [(0, b"")] + [
        (c.tree_size, c.root_hash) for c in signed[:-1]
    ]


@pytest.mark.parametrize(("name", "attack", "what", "kept"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_each_attack_on_the_database_is_named(
    hub_log: Log, name: str, attack: Callable[[Log], None], what: str, kept: tuple[int, ...]
) -> None:
    attack(hub_log)
    text, as_json = verify(hub_log, *kept_args(hub_log, kept))
    document = assert_named(text, as_json, what)
    if what in ("rollback", "fork") and kept:
        assert what in [k["outcome"] for k in document["kept"]]
        assert f"{what.upper()}: the log" in text.output


@pytest.mark.parametrize(("name", "attack", "what", "kept"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_each_attack_is_named_in_an_export(
    hub_log: Log, name: str, attack: Callable[[Log], None], what: str, kept: tuple[int, ...]
) -> None:
    attack(hub_log)
    path = export(hub_log, name)
    text, as_json = verify(hub_log, *kept_args(hub_log, kept), export=path)
    assert_named(text, as_json, what)


def test_a_forged_entry_appended_with_the_state_row_is_named_forged(hub_log: Log) -> None:
    append_forged(hub_log)
    text, as_json = verify(hub_log)
    assert_named(text, as_json, "forged")
    # An export carries no tags (only the data keys could check them): past its newest
    # checkpoint the forged entry is not named, but neither is it vouched for.
    text, as_json = verify(hub_log, export=export(hub_log, "forged"))
    assert "1 entr(ies) after the newest verified checkpoint: no signature covers them" in (
        text.output
    )
    assert json.loads(as_json.stdout)["uncovered"] == 1


def test_an_entry_inserted_mid_log_is_named_forged_at_its_position(hub_log: Log) -> None:
    insert_mid_log(hub_log, 5)
    text, as_json = verify(hub_log)
    document = assert_named(text, as_json, "forged")
    assert 5 in {p["log_index"] for p in document["problems"] if p["what"] == "forged"}


def test_a_garbled_sealed_value_is_unreadable_in_verify_and_signatures(hub_log: Log) -> None:
    garble_sealed_detail(hub_log.engine, 8)
    text, as_json = verify(hub_log)
    document = assert_named(text, as_json, "unreadable")
    assert 8 in {p["log_index"] for p in document["problems"] if p["what"] == "unreadable"}
    shown = run("audit", "signatures", "--db", hub_log.url)
    assert shown.exit_code == 1 and "Traceback" not in shown.output, shown.output
    assert "UNREADABLE: entry" in shown.output
    # The other entries' envelopes are still checked.
    assert "signed messages checked" in shown.output
    assert not shown.output.split("signed messages checked")[0].strip().endswith(" 0")


def test_attacks_on_the_export_file_itself_are_named(hub_log: Log) -> None:
    log = hub_log
    path = export(log, "full")
    lines = [json.loads(line) for line in path.read_text().splitlines()]

    def written(name: str, rows: list[dict[str, Any]]) -> Path:
        out = log.tmp / f"{name}.jsonl"
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return out

    def entries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if "id" in r]

    # A payload that is not its SHA-256.
    flipped = [dict(r) for r in lines]
    target = next(r for r in entries(flipped) if r.get("payload"))
    target["payload"] = target["payload"][:-4] + (
        "AAAA" if target["payload"][-4:] != "AAAA" else "BBBB"
    )
    assert_named(*verify(log, export=written("payload", flipped)), "changed")
    # A payload that is not base64.
    broken = [dict(r) for r in lines]
    next(r for r in entries(broken) if r.get("payload"))["payload"] = "not*base64"
    assert_named(*verify(log, export=written("payload64", broken)), "unreadable")
    # The checkpoint lines dropped: the schedule rule, and the kept checkpoint, miss them.
    without = [r for r in lines if "checkpoint" not in r]
    assert_named(*verify(log, export=written("nocheckpoints", without)), "checkpoint_missing")
    # The last entries and the state line rewound: the kept checkpoint proves a rollback.
    cut = log.sizes[3] - 1
    truncated = [r for r in lines if "id" not in r or (r["log_index"] or 0) < cut]
    truncated = [
        r
        for r in truncated
        if "checkpoint" not in r or r["checkpoint"]["tree_size"] <= log.sizes[2]
    ]
    tree = CompactRange()
    tree.extend(bytes.fromhex(r["leaf_hash"]) for r in entries(truncated))
    for r in truncated:
        if "state" in r:
            r["state"] = {
                "tree_size": tree.size,
                "root_hash": tree.root().hex(),
                "compact_range": b"".join(tree.nodes).hex(),
            }
    assert_named(
        *verify(log, "--trusted-checkpoint", log.kept[3], export=written("cut", truncated)),
        "rollback",
    )
    # A checkpoint line whose time is not the one signed.
    moved = [dict(r) for r in lines]
    cp = next(r for r in moved if "checkpoint" in r)
    cp["checkpoint"] = {**cp["checkpoint"], "signed_at": "2001-01-01T00:00:00+00:00"}
    assert_named(*verify(log, export=written("signed_at", moved)), "checkpoint")
    # A state line whose compact range does not make its root.
    state = [dict(r) for r in lines]
    st = next(r for r in state if "state" in r)
    st["state"] = {**st["state"], "compact_range": "00" * 32}
    assert_named(*verify(log, export=written("state", state)), "checkpoint")


# ---- the hub itself will not sign over a rollback ----------------------------------------------


def test_the_hub_signs_nothing_over_a_database_rolled_back_under_it(
    hub_log: Log, caplog: pytest.LogCaptureFixture
) -> None:
    log = hub_log
    net = log.net  # noqa: F811
    seen: list[bool] = []
    net.hub.jobs.log_memory.on_forked = seen.append
    restore(log.engine, log.snapshots[2])
    activity(net)
    net.clock.set(net.clock.now() + ROUND)
    with caplog.at_level(logging.ERROR, logger="hub.service.auditlog"):
        net.hub.keep_audit_log()
        net.hub.keep_audit_log()  # logged once per change, not at every run
    with net.store(read_only=True) as uow:
        assert uow.audit.checkpoints()[-1].tree_size == log.sizes[2]  # nothing signed
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "is not an extension of checkpoint" in errors[0], errors
    assert f"checkpoint {log.sizes[4]} signed at" in errors[0]
    assert "the hub signs no checkpoint until it is restored" in errors[0]
    assert seen == [True]
    # Restored to what it signed, the hub signs again and says so.
    restore(log.engine, log.snapshots[4])
    activity(net)
    net.clock.set(net.clock.now() + ROUND)
    net.hub.keep_audit_log()
    assert seen == [True, False]
    with net.store(read_only=True) as uow:
        assert uow.audit.checkpoints()[-1].tree_size > log.sizes[4]
    text, _ = verify(log, "--trusted-checkpoint", str(log.tmp))
    assert text.exit_code == 0, text.output


def test_a_fresh_checkpoint_on_request_is_not_signed_over_a_rollback_either(
    hub_log: Log,
) -> None:
    """GetLogCheckpoint(fresh) signs on a member's request: it must meet the same memory as
    the scheduled signing, or any member could get the rolled-back tree signed."""
    log = hub_log
    net = log.net  # noqa: F811
    restore(log.engine, log.snapshots[2])
    activity(net)
    with contextlib.suppress(DomainError):  # answered with the newest stored, or refused
        net.call(
            "BANKA",
            au.GET_LOG_CHECKPOINT,
            audit_pb2.GetLogCheckpointBody(fresh=True),
            audit_pb2.SignedLogCheckpoint,
        )
    with net.store(read_only=True) as uow:
        assert uow.audit.checkpoints()[-1].tree_size == log.sizes[2]  # nothing signed
    assert "is not an extension of checkpoint" in net.hub.jobs.log_memory.problem


def test_the_hub_signs_nothing_when_its_newest_checkpoint_row_vanishes(hub_log: Log) -> None:
    net = hub_log.net  # noqa: F811
    drop_checkpoints(hub_log.engine, hub_log.sizes[3])
    activity(net)
    net.clock.set(net.clock.now() + ROUND)
    net.hub.keep_audit_log()
    assert "its row is gone" in net.hub.jobs.log_memory.problem
    with net.store(read_only=True) as uow:
        assert uow.audit.checkpoints()[-1].tree_size == hub_log.sizes[3]


# ---- no false finding --------------------------------------------------------------------------


def test_a_restarted_hub_signs_on_without_a_finding(hub_log: Log) -> None:
    log = hub_log
    net = log.net  # noqa: F811
    activity(net)  # committed and placed while the hub was down, not yet signed
    restarted = Hub(net.store, net.clock, net.hub_key, net.notifier)
    assert restarted.jobs.open_audit_log() > 0  # as bootstrap does before serving
    assert restarted.jobs.log_memory.newest is not None
    with net.store(read_only=True) as uow:
        assert uow.audit.checkpoints()[-1].tree_size == uow.audit.log_state().size
    activity(net)
    net.clock.set(net.clock.now() + ROUND)
    restarted.keep_audit_log()
    text, _ = verify(log, "--trusted-checkpoint", str(log.tmp))
    assert text.exit_code == 0, text.output
    assert "0 problem(s)" in text.output


def rotate(log: Log, tmp: Path, *, endorse: bool) -> tuple[PrivateKey, Result | None]:
    net = log.net  # noqa: F811
    old_pem = tmp / "old.pem"
    old_pem.write_bytes(net.hub_key.to_pem())
    new = PrivateKey.generate()
    new_pub = tmp / "new.pub"
    new_pub.write_bytes(public_key_to_pem(new.algorithm, new.public_key))
    shown = None
    if endorse:
        shown = run(
            "keys", "endorse-hub", "--old", str(old_pem), "--new", str(new_pub), "--db", log.url
        )
        assert shown.exit_code == 0, shown.output
    ensure_hub_registered(net.store, new, net.clock)
    rotated = Hub(net.store, net.clock, new, net.notifier)
    activity(net)
    net.clock.set(net.clock.now() + ROUND)
    rotated.keep_audit_log()
    return new, shown


def test_a_hub_key_rotated_with_an_endorsement_is_trusted(hub_log: Log) -> None:
    new, shown = rotate(hub_log, hub_log.tmp, endorse=True)
    assert shown is not None and f"hub key {new.key_id}" in shown.output
    text, as_json = verify(hub_log, "--trusted-checkpoint", str(hub_log.tmp))
    assert text.exit_code == 0, text.output
    assert f"hub key(s) trusted by endorsement: {new.key_id}" in text.output
    assert json.loads(as_json.stdout)["hub_keys"]["endorsed"] == [new.key_id]
    # The export carries the endorsement: it verifies offline with the old key alone.
    text, _ = verify(hub_log, export=export(hub_log, "rotated"))
    assert text.exit_code == 0, text.output
    # Endorsing again is a no-op; another endorser for the same key is refused.
    old_pem, new_pub = hub_log.tmp / "old.pem", hub_log.tmp / "new.pub"
    again = run(
        "keys", "endorse-hub", "--old", str(old_pem), "--new", str(new_pub), "--db", hub_log.url
    )
    assert again.exit_code == 0 and "already endorsed" in again.output
    new_pem = hub_log.tmp / "new.pem"
    new_pem.write_bytes(new.to_pem())
    other = run(
        "keys", "endorse-hub", "--old", str(new_pem), "--new", str(new_pem), "--db", hub_log.url
    )
    assert other.exit_code == 1 and "same key" in other.output
    # A new key endorsed once is never endorsed again by another of the hub's keys.
    third = PrivateKey.generate()
    ensure_hub_registered(hub_log.net.store, third, hub_log.net.clock)
    third_pem = hub_log.tmp / "third.pem"
    third_pem.write_bytes(third.to_pem())
    twice = run(
        "keys", "endorse-hub", "--old", str(third_pem), "--new", str(new_pub), "--db", hub_log.url
    )
    assert twice.exit_code == 1, twice.output
    assert f"already endorsed by {hub_log.net.hub_key.key_id}" in twice.output


def test_a_hub_key_rotated_without_an_endorsement_is_a_finding(hub_log: Log) -> None:
    new, _ = rotate(hub_log, hub_log.tmp, endorse=False)
    text, as_json = verify(hub_log)
    assert_named(text, as_json, "checkpoint")
    assert f"signed with hub key {new.key_id!r}, which is not one you trust" in text.output
    # Given the new key too (the auditor was told of it), it verifies.
    new_pub = hub_log.tmp / "new.pub"
    text, _ = verify(hub_log, "--hub-key", str(new_pub))
    assert text.exit_code == 0, text.output


def test_an_endorsement_by_a_key_the_hub_never_had_is_refused(hub_log: Log) -> None:
    stranger = PrivateKey.generate()
    pem = hub_log.tmp / "stranger.pem"
    pem.write_bytes(stranger.to_pem())
    new_pub = hub_log.tmp / "n.pub"
    fresh = PrivateKey.generate()
    new_pub.write_bytes(public_key_to_pem(fresh.algorithm, fresh.public_key))
    shown = run(
        "keys", "endorse-hub", "--old", str(pem), "--new", str(new_pub), "--db", hub_log.url
    )
    assert shown.exit_code == 1 and "is not one of the hub's" in shown.output
    with hub_log.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(hub_key_endorsements)).scalar() == 0


def test_a_check_while_the_hub_serves_finds_nothing(hub_log: Log) -> None:
    log = hub_log
    net = log.net  # noqa: F811
    done = threading.Event()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            while not done.is_set():
                activity(net, 1)
                net.clock.set(net.clock.now() + timedelta(seconds=20))
                net.hub.keep_audit_log()
        except BaseException as e:  # reported below
            failures.append(e)

    worker = threading.Thread(target=serve)
    worker.start()
    try:
        for _ in range(2):
            text = run("audit", "verify", "--db", log.url, "--hub-key", log.pub, "--jobs", "1")
            assert text.exit_code == 0, text.output
    finally:
        done.set()
        worker.join()
    assert not failures, failures


# ---- a check that cannot be made: exit 2 -------------------------------------------------------


def test_a_check_that_cannot_be_made_exits_2(hub_log: Log) -> None:
    log = hub_log
    garbage = log.tmp / "garbage.pub"
    garbage.write_bytes(b"not a key")
    stranger = PrivateKey.generate()
    stranger_pub = log.tmp / "stranger.pub"
    stranger_pub.write_bytes(public_key_to_pem(stranger.algorithm, stranger.public_key))
    bad_kept = log.tmp / "bad" / "kept.json"
    bad_kept.parent.mkdir()
    bad_kept.write_text("{}")
    cases = {
        "no --hub-key": ["audit", "verify", "--db", log.url],
        "an unreadable hub key": ["audit", "verify", "--db", log.url, "--hub-key", str(garbage)],
        "an unreachable database": [
            "audit", "verify", "--db", "postgresql://postgres@127.0.0.1:1/none",
            "--hub-key", log.pub,
        ],
        "a kept checkpoint that is none": [
            "audit", "verify", "--db", log.url, "--hub-key", log.pub,
            "--trusted-checkpoint", str(bad_kept),
        ],
        "a kept checkpoint under an untrusted key": [
            "audit", "verify", "--db", log.url, "--hub-key", str(stranger_pub),
            "--trusted-checkpoint", log.kept[0],
        ],
        "no data keys": [
            "--data-keys", str(log.tmp / "none.keys"), "audit", "verify", "--db", log.url,
            "--hub-key", log.pub,
        ],
    }  # fmt: skip
    for why, args in cases.items():
        shown = run(*args)
        assert shown.exit_code == 2, (why, shown.output)
        assert "Traceback" not in shown.output and len(shown.output.strip().splitlines()) == 1, (
            why,
            shown.output,
        )
    # `audit checkpoint` keeps a file once and never overwrites another.
    again = run("audit", "checkpoint", "--db", log.url, "--hub-key", log.pub, "--out", log.kept[4])
    assert again.exit_code == 0 and "already keeps" in again.output
    other = run("audit", "checkpoint", "--db", log.url, "--hub-key", log.pub, "--out", log.kept[0])
    assert other.exit_code == 2 and "never overwritten" in other.output
    into = log.tmp / "dir"
    into.mkdir()
    shown = run("audit", "checkpoint", "--db", log.url, "--hub-key", log.pub, "--out", str(into))
    assert shown.exit_code == 0 and (into / f"checkpoint-{log.sizes[4]:012d}.json").exists()
    # A newest checkpoint under a key not trusted is a finding; nothing is written.
    untrusted = run(
        "audit", "checkpoint", "--db", log.url, "--hub-key", str(stranger_pub),
        "--out", str(log.tmp / "x.json"),
    )  # fmt: skip
    assert untrusted.exit_code == 1 and not (log.tmp / "x.json").exists()
    shutil.rmtree(into)
