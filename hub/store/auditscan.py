"""The raw scan `stophub audit verify` runs over the audit log (docs/audit.md, ADR 16).

A verification opens and hashes every entry: at a million entries that is seconds of pure
CPU per core. So the scan reads raw DBAPI rows (no ORM, no per-column type processing), opens
the sealed columns with a keyring opener, hashes each row with the one leaf function
(hub.domain.auditleaf), and splits the log into id ranges that worker processes read and hash
side by side, each over its own connection. The parent folds the tree as the ranges come
back, in order.

Where the C accelerator `hub.store._leafscan` was built (ADR 18), it hashes the rows that
verify; every other row (one that does not open, an unusual value, a leaf that differs) is
computed here, in Python, so the findings always come from this file's loop. `native=False`
runs everything in Python (`stophub audit verify --pure-python`).
"""

from __future__ import annotations

import hmac
import multiprocessing
import os
import signal
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from hub.crypto.audittag import TagKeys, derive, refused
from hub.crypto.fields import AES_256_GCM, DataKeyError, KeyEntry, Keyring, aad
from hub.domain.auditleaf import EPOCH, EPOCH_NAIVE, MICROSECOND, leaf_of, tag_bytes
from hub.service.ports import LeafChunk, LeafFields, LeafMismatch, TagProblem

try:
    from hub.store import _leafscan
except ImportError:  # not built here (no compiler or OpenSSL headers at install): Python only
    _leafscan = None  # type: ignore[assignment]

# Ids a task reads: large enough that a worker's per-task cost (a query, a pickled result of
# ~2 MB) is noise, small enough that two workers share a million-entry log evenly.
CHUNK_IDS = 32_768
# Below this many ranges a pool costs more than it saves.
PARALLEL_FROM = 4

_COLUMNS = (
    "id, recorded_at, kind, actor, message_id, case_id, order_id, payload, detail, "
    "log_index, leaf_hash, tag_key, tag, refused_at"
)


def native_available() -> bool:
    """Whether the C accelerator was built and loads."""
    return _leafscan is not None


def method(*, native: bool) -> str:
    """How a scan hashes the entries, for the record of a verification."""
    if not native:
        return "in pure Python (--pure-python)"
    if _leafscan is None:
        return "in pure Python: the C accelerator is not built here (ADR 18)"
    return (
        f"with the C accelerator against {_leafscan.OPENSSL_VERSION} where they verify; "
        "findings from the Python loop (ADR 18)"
    )


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class LeafHasher:
    """The leaves of raw audit_log rows (`_COLUMNS`, as SQLite with bytes for text or
    psycopg's binary cursor hands them back) under one keyring."""

    def __init__(
        self, keys: Sequence[KeyEntry], current: str, *, sqlite: bool, native: bool
    ) -> None:
        self.sqlite = sqlite
        ring = Keyring(keys, current)
        self.open_detail = ring.opener("audit_log.detail")
        self.open_payload = ring.opener("audit_log.payload")
        self.native = native and _leafscan is not None
        # The C loop opens AES-256-GCM only (OpenSSL 3.0 has no SM4-GCM): values under an
        # SM4 key name a key it does not hold, or a version it does not read, so their rows
        # come back to this file's loop, which opens them with `cryptography`.
        self.key_map = {
            kid.encode("ascii"): key for kid, key, cipher in ring.entries() if cipher == AES_256_GCM
        }
        self.detail_aad = aad("audit_log.detail")
        self.payload_aad = aad("audit_log.payload")
        self.tag_keys = TagKeys.of(ring.entries(), current)
        # The derived tag key of every data key, for the C loop (it checks tags too).
        self.tag_map = {kid.encode("ascii"): derive(key) for kid, key in ring.pairs()}
        self.tag_by_id = {kid: self.tag_map[kid.encode("ascii")] for kid in ring.order}

    def hash(self, rows: list[Any]) -> LeafChunk:
        return self._hash_native(rows) if self.native else self.hash_python(rows)

    def _hash_native(self, rows: list[Any]) -> LeafChunk:
        """The C loop for the rows that verify, this file's Python loop for the others."""
        assert _leafscan is not None
        id_bytes, index_bytes, leaf_bytes, slow, untagged = _leafscan.hash_rows(
            rows, self.sqlite, self.key_map, self.detail_aad, self.payload_aad, self.tag_map
        )
        ids, indexes = array("q"), array("q")
        ids.frombytes(id_bytes)
        indexes.frombytes(index_bytes)
        if not slow:
            return LeafChunk(ids, indexes, leaf_bytes, [], [], untagged)
        leaves = bytearray(leaf_bytes)
        mismatched: list[LeafMismatch] = []
        forged: list[TagProblem] = []
        for position in slow:
            one = self.hash_python([rows[position]])
            ids[position], indexes[position] = one.ids[0], one.indexes[0]
            leaves[position * 32 : position * 32 + 32] = one.leaves
            mismatched += (replace(m, position=position) for m in one.mismatched)
            forged += (replace(f, position=position) for f in one.forged)
            if one.untagged:
                untagged.append(position)
        untagged.sort()
        return LeafChunk(ids, indexes, bytes(leaves), mismatched, forged, untagged)

    def hash_python(self, rows: list[Any]) -> LeafChunk:
        ids, indexes, leaves = array("q"), array("q"), bytearray()
        mismatched: list[LeafMismatch] = []
        forged: list[TagProblem] = []
        untagged: list[int] = []
        open_detail, open_payload, sqlite = self.open_detail, self.open_payload, self.sqlite
        tag_problem = self.tag_keys.problem
        # The common case inline (a tag under a key of the ring, right): only the others go
        # through TagKeys.problem, which says what is wrong.
        tag_by_id, mac, data_of = self.tag_by_id, hmac.digest, tag_bytes
        hole = bytes(32)
        parse = datetime.fromisoformat
        position = -1
        # The innermost loop of a verification: a million rows a check, so no per-row
        # objects beyond what the leaf and the tag need.
        for (
            entry_id,
            at,
            kind,
            actor,
            message_id,
            case_id,
            order_id,
            payload,
            detail,
            index,
            stored,
            tag_key,
            tag,
            refused_at,
        ) in rows:
            position += 1
            ids.append(entry_id)
            indexes.append(-1 if index is None else index)
            if sqlite:  # text comes as UTF-8 bytes, times as text (naive UTC)
                when = (parse(at.decode()) - EPOCH_NAIVE) // MICROSECOND
                case_id = case_id or b""
                order_id = order_id or b""
                if isinstance(tag_key, bytes):
                    tag_key = tag_key.decode("utf-8", "replace")
            else:
                when = (at - EPOCH) // MICROSECOND
                kind, actor, message_id = kind.encode(), actor.encode(), message_id.encode()
                case_id = case_id.encode() if case_id else b""
                order_id = order_id.encode() if order_id else b""
            try:
                clear = open_detail(detail)
                digest = (
                    b"" if payload is None else sha256(open_payload(payload)).hexdigest().encode()
                )
                unreadable = ""
            except DataKeyError as err:
                clear, digest, unreadable = b"", b"", str(err)
            # The tag: an entry that does not open is UNREADABLE, its tag left unjudged.
            if refused_at is not None:
                forged.append(TagProblem(position, _refused(refused_at, sqlite)))
            elif tag is None and tag_key is None:
                untagged.append(position)
            elif unreadable:
                if index is None:  # the sequencer will refuse it: its tag cannot be checked
                    forged.append(TagProblem(position, f"its content does not open ({unreadable})"))
            else:
                kid = tag_key if tag_key is None else str(tag_key)
                key = tag_by_id.get(kid) if kid is not None else None
                if (
                    key is None
                    or tag is None
                    or mac(
                        key,
                        data_of(
                            entry_id,
                            when,
                            kind,
                            actor,
                            message_id,
                            case_id,
                            order_id,
                            clear,
                            digest,
                        ),
                        "sha256",
                    )
                    != tag
                ):
                    problem = tag_problem(
                        kid,
                        None if tag is None else _as_bytes(tag),
                        entry_id,
                        when,
                        kind,
                        actor,
                        message_id,
                        case_id,
                        order_id,
                        clear,
                        digest,
                    )
                    if problem:
                        forged.append(TagProblem(position, problem))
            if index is None:
                leaves += hole
                continue
            leaf = leaf_of(
                index, entry_id, when, kind, actor, message_id, case_id, order_id, clear, digest
            )
            leaves += leaf
            if leaf != stored or unreadable:
                fields = LeafFields(
                    entry_id, when, kind, actor, message_id, case_id, order_id, clear, digest
                )
                mismatched.append(LeafMismatch(position, stored, fields, unreadable))
        return LeafChunk(ids, indexes, bytes(leaves), mismatched, forged, untagged)


def _as_bytes(value: Any) -> bytes:
    # SQLite keeps whatever type was written: a tag stored as text or a number is a wrong
    # tag, not a reason to stop the verification.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def _refused(at: Any, sqlite: bool) -> str:
    if sqlite:  # naive UTC, as text
        at = datetime.fromisoformat(at.decode()).replace(tzinfo=UTC)
    return refused(at)


class _Reader:
    """One connection and the hasher of one process."""

    def __init__(self, url: str, keys: Sequence[KeyEntry], current: str, native: bool) -> None:
        engine = create_engine(url)
        args, kwargs = engine.dialect.create_connect_args(make_url(url))
        self.sqlite = engine.dialect.name == "sqlite"
        dbapi = engine.dialect.dbapi
        assert dbapi is not None
        self.conn: Any = dbapi.connect(*args, **kwargs)
        engine.dispose()
        if self.sqlite:
            # Text as UTF-8 bytes, as the leaf hashes it: no decode and re-encode per field.
            self.conn.text_factory = bytes
            self.sql = f"SELECT {_COLUMNS} FROM audit_log WHERE id >= ? AND id < ? ORDER BY id"
        else:
            self.sql = f"SELECT {_COLUMNS} FROM audit_log WHERE id >= %s AND id < %s ORDER BY id"
            # Times as datetime.timezone.utc, which the C loop reads as they are; under a
            # named zone (the server's default, 'Etc/UTC' say) every row takes the Python path.
            self.conn.execute("SET TIME ZONE 'UTC'")
            self.conn.commit()
        self.hasher = LeafHasher(keys, current, sqlite=self.sqlite, native=native)

    def close(self) -> None:
        self.conn.close()

    def bounds(self) -> tuple[int, int] | None:
        cur = self.conn.cursor()
        cur.execute("SELECT MIN(id), MAX(id) FROM audit_log")
        low, high = cur.fetchone()
        cur.close()
        if not self.sqlite:
            self.conn.rollback()
        return None if low is None else (int(low), int(high))

    def chunk(self, low: int, high: int) -> LeafChunk:
        # PostgreSQL's binary format: bytea and timestamps arrive without text decoding.
        cur = self.conn.cursor() if self.sqlite else self.conn.cursor(binary=True)
        cur.execute(self.sql, (low, high))
        rows = cur.fetchall()
        cur.close()
        if not self.sqlite:
            self.conn.rollback()  # end the read transaction: a long one holds back vacuum
        return self.hasher.hash(rows)


# ---- worker processes ---------------------------------------------------------------------------

_worker: _Reader | None = None


def _start_worker(url: str, keys: Sequence[KeyEntry], current: str, native: bool) -> None:
    global _worker
    # A forked worker inherits its parent's signal handling: a handler that only sets a flag
    # or writes to an event loop's wakeup fd (the console's, `serve`'s, a bench's) kept a
    # worker alive through the SIGTERM of the pool's terminate(), and the parent waited for
    # it for ever. Workers die on SIGTERM and leave Ctrl-C to the parent, which ends the pool.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = _Reader(url, keys, current, native)


def _read_range(bounds: tuple[int, int]) -> LeafChunk:
    assert _worker is not None
    return _worker.chunk(*bounds)


def scan(
    url: str,
    ring: Keyring,
    jobs: int | None = None,
    chunk_ids: int = CHUNK_IDS,
    *,
    native: bool = True,
) -> Iterator[LeafChunk]:
    """Every audit entry in id order, as chunks of computed leaves, hashed by `jobs`
    processes (default: one per core, at most 8) when the log is long enough to gain, with
    the C accelerator where it was built unless `native` is False."""
    jobs = default_jobs() if jobs is None else jobs
    reader = _Reader(url, ring.entries(), ring.current, native)
    try:
        found = reader.bounds()
        if found is None:
            return
        low, high = found
        ranges = [(a, min(a + chunk_ids, high + 1)) for a in range(low, high + 1, chunk_ids)]
        if jobs <= 1 or len(ranges) < PARALLEL_FROM:
            for bounds in ranges:
                yield reader.chunk(*bounds)
            return
    finally:
        reader.close()
    yield from _parallel(url, ring, jobs, ranges, native)


def _parallel(
    url: str, ring: Keyring, jobs: int, ranges: list[tuple[int, int]], native: bool
) -> Iterator[LeafChunk]:
    # fork where there is one: a worker starts in milliseconds and shares the parent's
    # imports; it opens its own connection and touches nothing else the parent holds.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    start: Callable[..., None] = _start_worker
    with context.Pool(jobs, start, (url, ring.entries(), ring.current, native)) as pool:
        yield from pool.imap(_read_range, ranges)
