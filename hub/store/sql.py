"""SQLAlchemy repositories and the unit of work, on SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from sqlalchemy import (
    Engine,
    LargeBinary,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    true,
    tuple_,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hub.crypto import audittag, blindindex, fields
from hub.domain.appeals import Appeal, AppealState
from hub.domain.auditleaf import micros, payload_digest
from hub.domain.cases import Case, CaseState, OrderKind
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.grades import QUEUE_ORDER
from hub.domain.institutions import (
    DutyContact,
    Institution,
    InstitutionKey,
    InstitutionKind,
    KeyState,
)
from hub.domain.leads import Lead
from hub.domain.merkle import EMPTY_ROOT
from hub.domain.returns import Distribution, DistributionState
from hub.domain.rules import AutoStopRule
from hub.domain.trail import OPEN_STATES
from hub.domain.warnings import Warning, WarningState
from hub.service.ports import (
    AppealRepository,
    AuditEntry,
    AuditLog,
    AuditRecord,
    CaseQuery,
    CaseRepository,
    ClockRepository,
    Conflict,
    DistributionRepository,
    HubKeyEndorsementRow,
    InboundRecord,
    InboundRepository,
    InstitutionRepository,
    LeadQuery,
    LeadRepository,
    LeafChunk,
    ListChangeRow,
    ListRepository,
    ListRow,
    ListState,
    LogCheckpointRow,
    LoggedRecord,
    LogState,
    NewDelivery,
    Outbox,
    PendingDelivery,
    RuleRepository,
    StoreUnavailable,
    WarningRepository,
)
from hub.store import auditscan
from hub.store.caserows import NewCases, load_case
from hub.store.reports import SqlReports
from hub.store.tables import (
    UTCDateTime,
    appeals,
    audit_checkpoints,
    audit_log,
    audit_log_nodes,
    audit_log_state,
    auto_stop_rules,
    cases,
    clocks,
    deliveries,
    distributions,
    fraud_transactions,
    hub_key_endorsements,
    inbound_messages,
    institution_keys,
    institutions,
    lead_accounts,
    leads,
    list_changes,
    list_entries,
    list_state,
    map_domain,
    onward_transfers,
    orders,
    registry_state,
    sla_log,
    warnings,
)

# Built once: an insert built per call with .values(...) costs several times its execution
# in statement construction and cache-key work (bench/clocks.py profiles showed ~4x).
INSERT_INBOUND = inbound_messages.insert()
INSERT_DELIVERIES = deliveries.insert().returning(
    deliveries.c.sequence, sort_by_parameter_order=True
)
INSERT_DELIVERIES_SQLITE = deliveries.insert().returning(deliveries.c.sequence)


def _reaching(source: Any, case_col: Any, inst: Any, acct: Any, *extra: Any) -> Any:
    # Each source stops at :n open cases of its own, found through its account index: a mule
    # account reached by thousands of victims costs a few rows, not a scan and a sort of all.
    return select(
        select(case_col, inst, acct)
        .select_from(source.join(cases, cases.c.case_id == case_col))
        .where(
            inst == bindparam("inst"),
            acct == bindparam("acct"),
            cases.c.state.in_(list(OPEN_STATES)),
            cases.c.case_id != bindparam("exclude"),
            *extra,
        )
        .limit(bindparam("n"))
        .subquery()
    )


# Open cases whose money reached one account: as the victim's payee, as an account stopped or
# frozen, as the target of an onward transfer. Built once (every report runs it).
INVOLVING = union_all(
    _reaching(
        fraud_transactions,
        fraud_transactions.c.case_id,
        fraud_transactions.c.payee_institution,
        fraud_transactions.c.payee_account,
    ),
    _reaching(
        orders,
        orders.c.case_id,
        orders.c.account_institution,
        orders.c.account_number,
        orders.c.kind.in_([OrderKind.STOP, OrderKind.FREEZE]),
    ),
    _reaching(
        onward_transfers.join(orders, orders.c.order_id == onward_transfers.c.order_id),
        orders.c.case_id,
        onward_transfers.c.to_institution,
        onward_transfers.c.to_account,
    ),
)
INSERT_AUDIT = audit_log.insert()
INSERT_SLA = sla_log.insert()
SELECT_REGISTRY_VERSION = select(registry_state.c.version).where(registry_state.c.id == 1)
BUMP_REGISTRY_VERSION = (
    update(registry_state)
    .where(registry_state.c.id == 1)
    .values(version=registry_state.c.version + 1)
)
SELECT_MEMBERS = select(
    institutions.c.code, institutions.c.display_name, institutions.c.kind, institutions.c.created_at
)
SELECT_MEMBER_KEYS = select(institution_keys).order_by(
    institution_keys.c.institution_code, institution_keys.c.created_at, institution_keys.c.key_id
)
_REGISTRY_CLASSES = (Institution, InstitutionKey, DutyContact)


@event.listens_for(Session, "before_flush")
def _bump_registry_version(session: Session, _context: Any, _instances: Any) -> None:
    """Every change to a member, a key or a contact moves the registry's version, in the same
    transaction: a hub that cached the registry sees it at its next request."""
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _REGISTRY_CLASSES):
            session.execute(BUMP_REGISTRY_VERSION)
            return


@event.listens_for(Session, "before_flush")
def _write_new_cases(session: Session, _context: Any, _instances: Any) -> None:
    """New cases go in before anything the ORM flushes, which may name them (a clock row)."""
    new_cases = session.info.get(NEW_CASES)
    if new_cases is not None:
        new_cases.write()


NEW_CASES = "stophub.new_cases"


def _flushing_only(session: Session, *classes: type) -> AbstractContextManager[Any]:
    """Autoflush before the next statement only if the session holds new or changed objects
    of `classes` (what the statement reads or names); otherwise the command's changes wait
    for the one flush at the end of its savepoint instead of being flushed in pieces."""
    for obj in (*session.new, *session.dirty):
        if isinstance(obj, classes):
            return nullcontext()
    return session.no_autoflush


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and a bare file path for SQLite."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def shown_url(url: str) -> str:
    """The URL as given, as people may read it: in a message or a log line, never with its
    password."""
    if "://" not in url:
        return normalise_url(url)
    return make_url(url).render_as_string(hide_password=True)


class NoDatabase(Exception):
    """No SQLite file where a read-only store was asked to open one: reading never creates
    a database."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no database at {path}")
        self.path = path


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for PostgreSQL or an in-memory database."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database or "").expanduser()


def read_only_url(url: str) -> str:
    """`url`, opened for reading only. SQLite: the file as a `mode=ro` URI, so an absent
    file is an error instead of a new database; PostgreSQL: every transaction of the session
    read-only. Carried in the URL itself, so the audit scan's worker processes, which connect
    from the URL, read the same way."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is None:
            raise NoDatabase(Path(":memory:"))  # nothing to read in a database made now
        # SQLAlchemy unquotes the database part once; SQLite unquotes the URI's path again.
        return parsed.set(
            database="file:" + quote(str(path.resolve())), query={"mode": "ro", "uri": "true"}
        ).render_as_string(hide_password=False)
    given = parsed.query.get("options") or ()
    options = " ".join(
        [*([given] if isinstance(given, str) else given), "-c default_transaction_read_only=on"]
    )
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def _opened_read_only(url: str) -> bool:
    return make_url(url).query.get("mode") == "ro"


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """`read_only`: SQLite transactions begin deferred (readers that never write). A URL
    from `read_only_url` opens the file itself read-only: nothing is created or changed."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        opened_read_only = _opened_read_only(url)
        path = make_url(url).database
        if path and path != ":memory:" and not opened_read_only:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not opened_read_only:  # a journal mode is the file's: a reader leaves it be
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # FULL: an acknowledged commit survives power loss, not only a process crash.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the write lock up front: a deferred transaction that later
            # upgrades can fail with SQLITE_BUSY instead of waiting its turn.
            conn.exec_driver_sql("BEGIN" if read_only or opened_read_only else "BEGIN IMMEDIATE")

        return engine
    # pre_ping: a pooled connection a database restart cut is found and replaced on checkout,
    # not discovered by the first statement. connect_timeout: a database host that vanished
    # fails a request in seconds (answered UNAVAILABLE) instead of holding a worker.
    return create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


# PostgreSQL SQLSTATEs that mean "the server is going away or not there yet", not "your
# statement is wrong": class 08 (connection exception), admin/crash shutdown, starting up.
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03")


def is_unavailable(exc: BaseException) -> bool:
    """Whether a database error means the database could not be reached, so that the same
    transaction may succeed a moment later (a restart, a failover, a cut connection)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError) and exc.statement is None:
        return True  # raised while connecting, before any statement ran
    state = getattr(exc.orig, "sqlstate", None) or ""
    return state.startswith(_UNAVAILABLE_STATES)


# Deadlock detected, serialization failure: PostgreSQL aborted the transaction (or its
# savepoint) because another one holds what it needs; the same work succeeds when run again.
_RUN_AGAIN_STATES = ("40P01", "40001")


def must_run_again(exc: BaseException) -> bool:
    """Whether the database refused `exc`'s statement only because of a concurrent
    transaction (another replica's, or another batch of this hub's: ADR 26)."""
    if isinstance(exc, IntegrityError):
        return True
    state = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    return isinstance(exc, DBAPIError) and state in _RUN_AGAIN_STATES


class SqlStore:
    """Engines and session factories for one database.

    `read_only`: an existing database, opened for reading only (`read_only_url`): a missing
    SQLite file is `NoDatabase`, and any write is refused by the database itself."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        map_domain()
        path = sqlite_file(url)
        if read_only and path is not None and not path.is_file():
            raise NoDatabase(path)
        self.url = read_only_url(url) if read_only else normalise_url(url)
        self.engine = make_engine(self.url, read_only=read_only)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.read_engine = (
            make_engine(self.url, read_only=True)
            if self.is_sqlite and not read_only
            else self.engine
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        # SQLite has one writer at a time. Writers of this process queue here instead of in
        # SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and leaves the
        # lock idle while every waiter sleeps: at 16 writers that was most of the p99.
        # Other processes (the CLI) still meet the busy handler.
        self._write_lock = threading.RLock() if self.is_sqlite else None

    def index_victims(self, batch: int = 500) -> int:
        """Fill the blind index of every case written before it existed, or under another
        index key (the keyring's oldest data key changed): how many cases were (re)indexed.
        The hub runs it at start (bootstrap.serve), in batches of `batch` cases."""
        index = blindindex.current_index()
        stale = or_(cases.c.victim_index_key.is_(None), cases.c.victim_index_key != index.key_id)
        done = 0
        while True:
            with self._sessions.begin() as session:
                rows = session.execute(
                    select(cases.c.case_id, cases.c.victim_name, cases.c.victim_id_number)
                    .where(stale)
                    .order_by(cases.c.case_id)
                    .limit(batch)
                ).all()
                for case_id, name, id_number in rows:
                    tokens = index.victim(name, id_number)
                    session.execute(
                        update(cases)
                        .where(cases.c.case_id == case_id)
                        .values(
                            victim_name_token=tokens.name,
                            victim_id_token=tokens.id_number,
                            victim_index_key=tokens.key_id,
                        )
                    )
            done += len(rows)
            if len(rows) < batch:
                return done

    def schema_revisions(self) -> tuple[str, ...]:
        """The Alembic revisions the database's schema is at (its alembic_version table, read
        without Alembic, which logs as it starts): () when it has none."""
        with self.read_engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return ()
            return tuple(
                str(r) for r in conn.scalars(text("SELECT version_num FROM alembic_version"))
            )

    def __call__(self, *, read_only: bool = False) -> SqlUnitOfWork:
        if read_only:
            return SqlUnitOfWork(self._read_sessions, lock_rows=not self.is_sqlite)
        return SqlUnitOfWork(self._sessions, lock_rows=not self.is_sqlite, gate=self._write_lock)

    def scan_audit(
        self, jobs: int | None = None, chunk_ids: int = auditscan.CHUNK_IDS, *, native: bool = True
    ) -> Iterator[LeafChunk]:
        """The audit log's entries with the leaves their content makes now, read raw and
        hashed by `jobs` processes (hub.store.auditscan), for `auditverify.verify_store`; with
        the C accelerator where it was built, unless `native` is False."""
        return auditscan.scan(self.url, fields.keyring(), jobs, chunk_ids, native=native)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


class SqlInstitutions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, code: str) -> Institution | None:
        return self.session.get(Institution, code)

    def add(self, institution: Institution) -> None:
        self.session.add(institution)

    def list(self, page_size: int, after: str | None) -> Sequence[Institution]:
        stmt = select(Institution).order_by(institutions.c.code).limit(page_size)
        if after:
            stmt = stmt.where(institutions.c.code > after)
        return self.session.scalars(stmt).all()

    def kinds(self) -> dict[str, InstitutionKind]:
        rows = self.session.execute(select(institutions.c.code, institutions.c.kind))
        return {code: kind for code, kind in rows}

    def version(self) -> int | None:
        value = self.session.execute(SELECT_REGISTRY_VERSION).scalar_one_or_none()
        return None if value is None else int(value)

    def members(self) -> dict[str, Institution]:
        # Core rows into fresh (never session-attached) objects: the cache outlives sessions
        # and must not drag the ORM's identity map or lazy loads along.
        found = {
            code: Institution(code, name, kind, created_at)
            for code, name, kind, created_at in self.session.execute(SELECT_MEMBERS)
        }
        for row in self.session.execute(SELECT_MEMBER_KEYS):
            owner = found.get(row.institution_code)
            if owner is not None:
                owner.keys.append(
                    InstitutionKey(
                        row.key_id,
                        row.algorithm,
                        bytes(row.public_key),
                        row.created_at,
                        row.state,
                        row.revoked_at,
                        row.institution_code,
                        row.not_after,
                    )
                )
        return found

    def key_states(
        self, codes: Collection[str]
    ) -> dict[str, dict[str, tuple[KeyState, datetime | None]]]:
        # Core rows, one query for any number of members: a broadcast checks a thousand
        # streams' keys before it goes out.
        found: dict[str, dict[str, tuple[KeyState, datetime | None]]] = {c: {} for c in codes}
        wanted = list(found)
        for start in range(0, len(wanted), IN_CHUNK):
            rows = self.session.execute(
                select(
                    institution_keys.c.institution_code,
                    institution_keys.c.key_id,
                    institution_keys.c.state,
                    institution_keys.c.not_after,
                ).where(institution_keys.c.institution_code.in_(wanted[start : start + IN_CHUNK]))
            )
            for code, key_id, state, not_after in rows:
                found[code][key_id] = (KeyState(state), not_after)
        return found


class SqlCases:
    def __init__(self, session: Session, lock_rows: bool, new: NewCases | None = None) -> None:
        self.session = session
        self.lock_rows = lock_rows
        # Cases added here, written with Core statements when first needed (caserows.py).
        self.new = new or NewCases(session)

    def case_id_of_order(self, order_id: str) -> str | None:
        self.new.write()
        return self.session.scalar(select(orders.c.case_id).where(orders.c.order_id == order_id))

    def get(self, case_id: str, *, lock: bool = False) -> Case | None:
        added = self.new.pending(case_id)
        if added is not None:
            return added  # as the session would: the object added, not a copy
        self.new.write()
        # Serialises every command on one case across replicas (SQLite: the write lock).
        loaded = load_case(self.session, case_id, lock=lock and self.lock_rows)
        if loaded is not False:
            return loaded
        if lock and self.lock_rows:
            return self.session.scalars(
                select(Case).where(cases.c.case_id == case_id).with_for_update()
            ).one_or_none()
        return self.session.get(Case, case_id)

    def add(self, case: Case) -> None:
        tokens = blindindex.current_index().victim(case.victim_name, case.victim_id_number)
        case.victim_name_token = tokens.name
        case.victim_id_token = tokens.id_number
        case.victim_index_key = tokens.key_id
        self.new.add(case)

    def search(
        self, query: CaseQuery, page_size: int, after: tuple[Any, ...] | None
    ) -> Sequence[tuple[Case, datetime | None]]:
        self.new.write()
        if not query.by_deadline:
            newest = (
                select(Case)
                .where(*self._filters(query))
                .order_by(cases.c.created_at.desc(), cases.c.case_id.desc())
            )
            if after is not None:
                at, case_id = after
                newest = newest.where(
                    or_(
                        cases.c.created_at < at,
                        and_(cases.c.created_at == at, cases.c.case_id < case_id),
                    )
                )
            return [(c, None) for c in self.session.scalars(newest.limit(page_size)).all()]
        # The queue's order (docs/grades.md): grade by grade, red first, each in deadline
        # order; `after` is (grade rank, no-clock flag, deadline, case id).
        found: list[tuple[Case, datetime | None]] = []
        first_rank = 0 if after is None else after[0]
        for rank in range(first_rank, len(QUEUE_ORDER)):
            grade = cases.c.grade == QUEUE_ORDER[rank].value
            within = after[1:] if after is not None and rank == first_rank else None
            found += self._by_deadline(query, [grade], page_size - len(found), within)
            if len(found) >= page_size:
                break
        return found

    def _by_deadline(
        self,
        query: CaseQuery,
        extra: list[Any],
        page_size: int,
        after: tuple[Any, ...] | None,
    ) -> list[tuple[Case, datetime | None]]:
        # Deadline order, driven by the open clocks' deadline index so a page reads about a
        # page of rows: first the cases whose earliest open clock comes next (each open clock
        # that no earlier open clock of its case precedes), then the cases without one.
        found: list[tuple[Case, datetime | None]] = []
        if after is None or not after[0]:
            k = clocks.alias("k")
            earlier = clocks.alias("earlier")
            precedes = (
                select(earlier.c.clock_id)
                .where(
                    earlier.c.state == ClockState.OPEN,
                    earlier.c.case_id == k.c.case_id,
                    or_(
                        earlier.c.deadline_at < k.c.deadline_at,
                        and_(
                            earlier.c.deadline_at == k.c.deadline_at,
                            earlier.c.clock_id < k.c.clock_id,
                        ),
                    ),
                )
                .exists()
            )
            first = (
                select(Case, k.c.deadline_at)
                .join(k, k.c.case_id == cases.c.case_id)
                .where(k.c.state == ClockState.OPEN, ~precedes, *self._filters(query), *extra)
                # k's own case_id (equal to the case's by the join): the order is then the
                # index's, (state, deadline_at, case_id), read a page at a time, never sorted.
                .order_by(k.c.deadline_at, k.c.case_id)
            )
            if after is not None:
                _, at, case_id = after
                at_ = type_coerce(at, UTCDateTime())
                first = first.where(
                    or_(
                        k.c.deadline_at > at_,
                        and_(k.c.deadline_at == at_, k.c.case_id > case_id),
                    )
                )
            found = [(row[0], row[1]) for row in self.session.execute(first.limit(page_size))]
            after = None
        if len(found) < page_size:
            running = (
                select(clocks.c.clock_id)
                .where(clocks.c.state == ClockState.OPEN, clocks.c.case_id == cases.c.case_id)
                .exists()
            )
            rest = (
                select(Case)
                .where(~running, *self._filters(query), *extra)
                .order_by(cases.c.case_id)
            )
            if after is not None:
                rest = rest.where(cases.c.case_id > after[2])
            found += [(c, None) for c in self.session.scalars(rest.limit(page_size - len(found)))]
        return found

    @staticmethod
    def _filters(query: CaseQuery) -> list[Any]:
        """SQL conditions for `query`: each an indexed lookup (docs/cases.md)."""
        where: list[Any] = []

        def party(code: str) -> Any:
            # Reported by it, or an order of the case addressed to it (ix_orders_case_id):
            # walking the cases in the page's order, each row is decided by an index probe.
            held = (
                select(orders.c.order_id)
                .where(orders.c.case_id == cases.c.case_id, orders.c.addressed_to == code)
                .exists()
            )
            return or_(cases.c.reporting_institution == code, held)

        for code in (query.party, query.institution):
            if code is not None:
                where.append(party(code))
        if query.reporter is not None:
            where.append(cases.c.reporting_institution == query.reporter)
        if query.state is not None:
            where.append(cases.c.state == query.state)
        if query.account is not None:
            inst, number = query.account
            where.append(
                cases.c.case_id.in_(
                    union_all(
                        select(fraud_transactions.c.case_id).where(
                            fraud_transactions.c.payer_institution == inst,
                            fraud_transactions.c.payer_account == number,
                        ),
                        select(fraud_transactions.c.case_id).where(
                            fraud_transactions.c.payee_institution == inst,
                            fraud_transactions.c.payee_account == number,
                        ),
                        select(orders.c.case_id).where(
                            orders.c.account_institution == inst,
                            orders.c.account_number == number,
                        ),
                    )
                )
            )
        if query.victim_name_token is not None:
            where.append(cases.c.victim_name_token == query.victim_name_token)
        if query.victim_id_token is not None:
            where.append(cases.c.victim_id_token == query.victim_id_token)
        if query.created_from is not None:
            where.append(cases.c.created_at >= type_coerce(query.created_from, UTCDateTime()))
        if query.created_to is not None:
            where.append(cases.c.created_at < type_coerce(query.created_to, UTCDateTime()))
        return where

    def list(
        self,
        state: CaseState | None,
        page_size: int,
        after: tuple[datetime, str] | None,
        reporter: str | None = None,
    ) -> Sequence[Case]:
        self.new.write()
        stmt = (
            select(Case)
            .order_by(cases.c.created_at.desc(), cases.c.case_id.desc())
            .limit(page_size)
        )
        if reporter is not None:
            stmt = stmt.where(cases.c.reporting_institution == reporter)
        if state is not None:
            stmt = stmt.where(cases.c.state == state)
        if after is not None:
            at, case_id = after
            stmt = stmt.where(
                or_(
                    cases.c.created_at < at,
                    and_(cases.c.created_at == at, cases.c.case_id < case_id),
                )
            )
        return self.session.scalars(stmt).all()

    def involving(
        self, accounts: Collection[tuple[str, str]], exclude: str, limit: int
    ) -> Sequence[tuple[str, str, str]]:
        self.new.write(except_id=exclude)
        found: set[tuple[str, str, str]] = set()
        # No autoflush: what is pending is the asking case's own (excluded anyway; the
        # requests before it in a group commit were flushed when their savepoints ended), and
        # flushing it here would split one flush of the request into two.
        with self.session.no_autoflush:
            for institution, account in sorted(set(accounts)):
                params = {"inst": institution, "acct": account, "exclude": exclude, "n": limit}
                found.update(
                    (str(r[0]), str(r[1]), str(r[2]))
                    for r in self.session.execute(INVOLVING, params)
                )
        return sorted(found)[:limit]


class SqlDistributions:
    def __init__(self, session: Session, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    def get(self, distribution_id: str, *, lock: bool = False) -> Distribution | None:
        if not lock:
            return self.session.get(Distribution, distribution_id)
        stmt = (
            select(Distribution)
            .where(distributions.c.distribution_id == distribution_id)
            .execution_options(populate_existing=True)
        )
        if self.lock_rows:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def add(self, distribution: Distribution) -> None:
        self.session.add(distribution)

    def open_for_account(self, institution: str, account: str) -> Sequence[Distribution]:
        return self.session.scalars(
            select(Distribution)
            .where(
                distributions.c.account_institution == institution,
                distributions.c.account_number == account,
                distributions.c.state == DistributionState.NOTICE,
            )
            .order_by(distributions.c.started_at)
        ).all()


LIST_STATE_ID = 1
ZERO_DIGEST = bytes(32)
_LIST_ROW_COLUMNS = (
    list_entries.c.entry_id,
    list_entries.c.kind,
    list_entries.c.subject_token,
    list_entries.c.basis,
    list_entries.c.source_case_id,
    list_entries.c.listed_at,
    list_entries.c.expires_at,
    list_entries.c.listed_by,
    list_entries.c.ended_at,
    list_entries.c.end_kind,
    list_entries.c.end_reason,
    list_entries.c.added_version,
    list_entries.c.ended_version,
    list_entries.c.clear_wire,
    list_entries.c.token_wire,
)
SELECT_LIST_ROWS = select(*_LIST_ROW_COLUMNS)
INSERT_LIST_ENTRY = list_entries.insert()
INSERT_LIST_CHANGE = list_changes.insert()


def _list_row(r: Any) -> ListRow:
    return ListRow(*r)


class SqlLists:
    """The list's entries, change log and state, in Core: a snapshot reads a million rows."""

    def __init__(self, session: Session, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    def state(self, *, lock: bool = False) -> ListState:
        stmt = select(list_state).where(list_state.c.id == LIST_STATE_ID)
        if lock and self.lock_rows:
            stmt = stmt.with_for_update()
        row = self.session.execute(stmt).one_or_none()
        if row is None:
            return ListState(0, 0, 0, 0, "")
        return ListState(
            row.version,
            row.entry_count,
            int.from_bytes(row.clear_digest),
            int.from_bytes(row.token_digest),
            row.list_key_id,
        )

    def set_state(self, state: ListState) -> None:
        values = {
            "version": state.version,
            "entry_count": state.count,
            "clear_digest": state.clear_digest.to_bytes(32, "big"),
            "token_digest": state.token_digest.to_bytes(32, "big"),
            "list_key_id": state.list_key_id,
        }
        done = self.session.execute(
            update(list_state).where(list_state.c.id == LIST_STATE_ID).values(**values)
        )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            # The first change ever; a second hub doing the same at once fails on the key.
            self.session.execute(list_state.insert().values(id=LIST_STATE_ID, **values))

    def add(self, row: ListRow) -> None:
        self.session.execute(
            INSERT_LIST_ENTRY,
            {c.name: getattr(row, c.name) for c in _LIST_ROW_COLUMNS},
        )

    def end(self, entry_id: str, at: datetime, kind: str, reason: str, version: int) -> None:
        self.session.execute(
            update(list_entries)
            .where(list_entries.c.entry_id == entry_id)
            .values(ended_at=at, end_kind=kind, end_reason=reason, ended_version=version)
        )

    def log_change(self, version: int, op: str, entry_id: str, at: datetime) -> None:
        self.session.execute(
            INSERT_LIST_CHANGE, {"version": version, "op": op, "entry_id": entry_id, "at": at}
        )

    def get(self, entry_id: str) -> ListRow | None:
        row = self.session.execute(
            SELECT_LIST_ROWS.where(list_entries.c.entry_id == entry_id)
        ).one_or_none()
        return None if row is None else _list_row(row)

    def by_tokens(self, tokens: Collection[bytes], *, live_only: bool) -> Sequence[ListRow]:
        if not tokens:
            return []
        # Live or not is decided here, not in SQL: with `ended_version IS NULL` in the query,
        # SQLite's planner picks the live-expiry index and reads every live entry (660 ms a
        # call at a million entries) instead of the few rows each token has.
        stmt = SELECT_LIST_ROWS.where(list_entries.c.subject_token.in_(list(tokens)))
        rows = sorted(
            (_list_row(r) for r in self.session.execute(stmt)), key=lambda r: r.added_version
        )
        return [r for r in rows if r.ended_version is None] if live_only else rows

    def live_for_case(self, case_id: str) -> Sequence[ListRow]:
        stmt = SELECT_LIST_ROWS.where(list_entries.c.source_case_id == case_id)
        rows = [_list_row(r) for r in self.session.execute(stmt)]
        return sorted((r for r in rows if r.ended_version is None), key=lambda r: r.added_version)

    def due(self, now: datetime, limit: int) -> Sequence[ListRow]:
        stmt = (
            SELECT_LIST_ROWS.where(
                list_entries.c.ended_version.is_(None),
                list_entries.c.expires_at <= type_coerce(now, UTCDateTime()),
            )
            .order_by(list_entries.c.expires_at, list_entries.c.entry_id)
            .limit(limit)
        )
        return [_list_row(r) for r in self.session.execute(stmt)]

    def snapshot(
        self, version: int, tokens: bool, after_version: int, limit: int
    ) -> Sequence[tuple[int, bytes]]:
        wire = list_entries.c.token_wire if tokens else list_entries.c.clear_wire
        stmt = (
            select(list_entries.c.added_version, wire)
            .where(
                list_entries.c.added_version > after_version,
                list_entries.c.added_version <= version,
                or_(
                    list_entries.c.ended_version.is_(None),
                    list_entries.c.ended_version > version,
                ),
            )
            .order_by(list_entries.c.added_version)
            .limit(limit)
        )
        return [(r[0], r[1]) for r in self.session.execute(stmt)]

    def changes(self, after: int, upto: int, tokens: bool, limit: int) -> Sequence[ListChangeRow]:
        wire = list_entries.c.token_wire if tokens else list_entries.c.clear_wire
        stmt = (
            select(
                list_changes.c.version,
                list_changes.c.op,
                list_changes.c.entry_id,
                list_changes.c.at,
                wire,
            )
            .join(list_entries, list_entries.c.entry_id == list_changes.c.entry_id)
            .where(list_changes.c.version > after, list_changes.c.version <= upto)
            .order_by(list_changes.c.version)
            .limit(limit)
        )
        return [
            ListChangeRow(r[0], r[1], r[2], r[3], r[4] if r[1] == "add" else None)
            for r in self.session.execute(stmt)
        ]

    def oldest_change(self) -> int | None:
        found: int | None = self.session.execute(select(func.min(list_changes.c.version))).scalar()
        return found

    def prune_changes(self, below: int, limit: int) -> int:
        oldest = self.oldest_change()
        if oldest is None or oldest >= below:
            return 0
        # A range of the primary key: the versions are gapless, so this is at most `limit` rows.
        end = min(below, oldest + limit)
        done = self.session.execute(delete(list_changes).where(list_changes.c.version < end))
        return int(done.rowcount)  # type: ignore[attr-defined]


class SqlLeads:
    def __init__(self, session: Session, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    def get(self, lead_id: str, *, lock: bool = False) -> Lead | None:
        if not (lock and self.lock_rows):
            return self.session.get(Lead, lead_id)
        return self.session.scalars(
            select(Lead)
            .where(leads.c.lead_id == lead_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()

    def add(self, lead: Lead, accounts: Collection[tuple[str, str]]) -> None:
        self.session.add(lead)
        # The lead's row before the rows that refer to it.
        self.session.flush()
        rows = [
            {"lead_id": lead.lead_id, "institution_code": i, "account_number": n}
            for i, n in sorted(set(accounts))
        ]
        if rows:
            self.session.execute(lead_accounts.insert(), rows)

    def linked(
        self, lead_id: str, accounts: Collection[tuple[str, str]], limit: int
    ) -> Sequence[tuple[str, str, str, str]]:
        found: list[tuple[str, str, str, str]] = []
        for institution, number in sorted(set(accounts)):
            rows = self.session.execute(
                select(
                    lead_accounts.c.lead_id,
                    leads.c.submitter,
                    lead_accounts.c.institution_code,
                    lead_accounts.c.account_number,
                )
                .join(leads, leads.c.lead_id == lead_accounts.c.lead_id)
                .where(
                    lead_accounts.c.institution_code == institution,
                    lead_accounts.c.account_number == number,
                    lead_accounts.c.lead_id != lead_id,
                )
                .order_by(leads.c.submitted_at, leads.c.lead_id)
                .limit(limit)
            )
            found += [(r[0], r[1], r[2], r[3]) for r in rows]
        found.sort(key=lambda r: (r[0], r[2], r[3]))
        return found[:limit]

    def search(
        self, query: LeadQuery, limit: int, after: tuple[int, datetime, str] | None
    ) -> Sequence[Lead]:
        stmt = select(Lead).order_by(leads.c.grade_rank, leads.c.queue_at, leads.c.lead_id)
        if query.state is not None:
            stmt = stmt.where(leads.c.state == query.state)
        if query.submitter is not None:
            stmt = stmt.where(leads.c.submitter == query.submitter)
        if query.grade is not None:
            stmt = stmt.where(leads.c.grade == query.grade)
        if after is not None:
            rank, at, lead_id = after
            at_ = type_coerce(at, UTCDateTime())
            stmt = stmt.where(
                or_(
                    leads.c.grade_rank > rank,
                    and_(leads.c.grade_rank == rank, leads.c.queue_at > at_),
                    and_(
                        leads.c.grade_rank == rank,
                        leads.c.queue_at == at_,
                        leads.c.lead_id > lead_id,
                    ),
                )
            )
        return self.session.scalars(stmt.limit(limit)).all()


class SqlAppeals:
    def __init__(self, session: Session, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    def get(self, appeal_id: str, *, lock: bool = False) -> Appeal | None:
        if not lock:
            return self.session.get(Appeal, appeal_id)
        stmt = (
            select(Appeal)
            .where(appeals.c.appeal_id == appeal_id)
            .execution_options(populate_existing=True)
        )
        if self.lock_rows:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def add(self, appeal: Appeal) -> None:
        self.session.add(appeal)

    def open_for(self, reference: str) -> Sequence[Appeal]:
        return self.session.scalars(
            select(Appeal).where(
                appeals.c.reference == reference, appeals.c.state == AppealState.FILED
            )
        ).all()

    def recent(self, limit: int, *, open_only: bool) -> Sequence[Appeal]:
        stmt = select(Appeal).order_by(appeals.c.filed_at.desc(), appeals.c.appeal_id)
        if open_only:
            stmt = stmt.where(appeals.c.state == AppealState.FILED)
        return self.session.scalars(stmt.limit(limit)).all()

    def search(
        self,
        *,
        state: AppealState | None,
        appellant: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> Sequence[Appeal]:
        stmt = select(Appeal).order_by(appeals.c.filed_at.desc(), appeals.c.appeal_id.desc())
        if state is not None:
            stmt = stmt.where(appeals.c.state == state)
        if appellant is not None:
            stmt = stmt.where(appeals.c.appellant == appellant)
        if after is not None:
            at, appeal_id = after
            stmt = stmt.where(
                or_(
                    appeals.c.filed_at < at,
                    and_(appeals.c.filed_at == at, appeals.c.appeal_id < appeal_id),
                )
            )
        return self.session.scalars(stmt.limit(limit)).all()


class SqlWarnings:
    def __init__(self, session: Session, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    def get(self, warning_id: str, *, lock: bool = False) -> Warning | None:
        if not lock:
            return self.session.get(Warning, warning_id)
        stmt = (
            select(Warning)
            .where(warnings.c.warning_id == warning_id)
            .execution_options(populate_existing=True)
        )
        if self.lock_rows:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def add(self, warning: Warning) -> None:
        self.session.add(warning)

    def search(
        self,
        *,
        state: WarningState | None,
        party: str | None,
        open_only: bool,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> Sequence[Warning]:
        stmt = select(Warning).order_by(warnings.c.sent_at.desc(), warnings.c.warning_id.desc())
        if state is not None:
            stmt = stmt.where(warnings.c.state == state)
        if open_only:
            stmt = stmt.where(warnings.c.state != WarningState.CLOSED)
        if party is not None:
            stmt = stmt.where(or_(warnings.c.sender == party, warnings.c.addressee == party))
        if after is not None:
            at, warning_id = after
            stmt = stmt.where(
                or_(
                    warnings.c.sent_at < at,
                    and_(warnings.c.sent_at == at, warnings.c.warning_id < warning_id),
                )
            )
        return self.session.scalars(stmt.limit(limit)).all()


class SqlRules:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, centre_code: str) -> AutoStopRule | None:
        return self.session.get(AutoStopRule, centre_code)

    def put(self, rule: AutoStopRule) -> None:
        self.session.merge(rule)

    def enabled(self) -> Sequence[AutoStopRule]:
        stmt = (
            select(AutoStopRule)
            .where(auto_stop_rules.c.enabled.is_(True))
            .order_by(auto_stop_rules.c.centre_code)
        )
        with _flushing_only(self.session, AutoStopRule):
            return self.session.scalars(stmt).all()


class SqlInbound:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, sender: str, message_id: str) -> InboundRecord | None:
        row = self.session.execute(
            select(
                inbound_messages.c.digest,
                inbound_messages.c.body_type,
                inbound_messages.c.response,
            ).where(
                inbound_messages.c.sender == sender,
                inbound_messages.c.message_id == message_id,
            )
        ).one_or_none()
        return InboundRecord(bytes(row[0]), row[1], bytes(row[2])) if row else None

    def add(
        self, sender: str, message_id: str, record: InboundRecord, received_at: datetime
    ) -> None:
        try:
            # No autoflush: the table names nothing else, and the request's own changes are
            # flushed once, at the end of its savepoint.
            with self.session.no_autoflush:
                self._insert(sender, message_id, record, received_at)
        except IntegrityError as exc:
            # A twin request committed this id first (PostgreSQL lets both get this far).
            raise Conflict(f"{sender}/{message_id} was stored concurrently") from exc

    def _insert(
        self, sender: str, message_id: str, record: InboundRecord, received_at: datetime
    ) -> None:
        self.session.execute(
            INSERT_INBOUND,
            {
                "sender": sender,
                "message_id": message_id,
                "digest": record.digest,
                "body_type": record.body_type,
                "received_at": received_at,
                "response": record.response,
            },
        )


class SqlOutbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self, recipient: str, kind: str, case_id: str | None, envelope: bytes, now: datetime
    ) -> int:
        return self.add_many([NewDelivery(recipient, kind, case_id, envelope)], now)[0]

    def add_many(self, rows: Sequence[NewDelivery], now: datetime) -> list[int]:
        if not rows:
            return []
        # One INSERT ... RETURNING for all of them (SQLAlchemy's "insertmanyvalues"): a
        # broadcast's 1,000 were 1,000 statements. Asked to return the sequences in the rows'
        # order, SQLAlchemy inserts row by row on SQLite; there a writer holds the write lock
        # (BEGIN IMMEDIATE) and each row of one INSERT takes the next rowid in turn, so the
        # sequences, sorted, are in the rows' order.
        sqlite = self.session.connection().dialect.name == "sqlite"
        # No autoflush: the outbox names only institutions, so what the command changed so far
        # waits for the one flush at the end of its savepoint instead of being flushed here,
        # once per notice (a verification with its auto stop flushed three times). A member
        # added in this transaction must be written first.
        with _flushing_only(self.session, Institution):
            result = self._insert(sqlite, rows, now)
        sequences = [int(s) for s in result.scalars()]
        return sorted(sequences) if sqlite else sequences

    def _insert(self, sqlite: bool, rows: Sequence[NewDelivery], now: datetime) -> Any:
        return self.session.execute(
            INSERT_DELIVERIES_SQLITE if sqlite else INSERT_DELIVERIES,
            [
                {
                    "recipient": r.recipient,
                    "kind": r.kind,
                    "case_id": r.case_id,
                    "envelope": r.envelope,
                    "created_at": now,
                    "attempts": 1 if r.sent else 0,
                    "first_sent_at": now if r.sent else None,
                }
                for r in rows
            ],
        )

    def pending(self, recipient: str, limit: int) -> Sequence[PendingDelivery]:
        rows = self.session.execute(
            select(
                deliveries.c.sequence,
                deliveries.c.recipient,
                deliveries.c.envelope,
                deliveries.c.attempts,
            )
            .where(deliveries.c.recipient == recipient, deliveries.c.acked_at.is_(None))
            .order_by(deliveries.c.sequence)
            .limit(limit)
        )
        return [PendingDelivery(int(s), r, bytes(e), int(a)) for s, r, e, a in rows]

    def mark_sent(self, sequences: Sequence[int], now: datetime) -> None:
        if not sequences:
            return
        self.session.execute(
            update(deliveries)
            .where(deliveries.c.sequence.in_(sequences))
            .values(
                attempts=deliveries.c.attempts + 1,
                first_sent_at=func.coalesce(
                    deliveries.c.first_sent_at, type_coerce(now, UTCDateTime())
                ),
            )
        )

    def ack(self, recipient: str, sequences: Sequence[int], now: datetime) -> int:
        if not sequences:
            return 0
        result = self.session.execute(
            update(deliveries)
            .where(
                deliveries.c.recipient == recipient,
                deliveries.c.sequence.in_(sequences),
                deliveries.c.acked_at.is_(None),
            )
            .values(acked_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def pending_many(
        self, recipients: Collection[str], limit: int
    ) -> dict[str, list[PendingDelivery]]:
        found: dict[str, list[PendingDelivery]] = {r: [] for r in recipients}
        wanted = list(found)
        for start in range(0, len(wanted), IN_CHUNK):
            first = _first_unacked(
                wanted[start : start + IN_CHUNK],
                limit,
                deliveries.c.envelope,
                deliveries.c.attempts,
            )
            for r, s, e, a in self.session.execute(first):
                found[r].append(PendingDelivery(int(s), r, bytes(e), int(a)))
        for rows in found.values():
            rows.sort(key=lambda d: d.sequence)
        return found

    def unacked(self, recipients: Collection[str], limit: int) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {r: [] for r in recipients}
        wanted = list(found)
        for start in range(0, len(wanted), IN_CHUNK):
            first = _first_unacked(wanted[start : start + IN_CHUNK], limit)
            for r, s in self.session.execute(first):
                found[r].append(int(s))
        for sequences in found.values():
            sequences.sort()
        return found

    def count_attempts(self, sequences: Sequence[int], now: datetime) -> dict[int, int]:
        counted: dict[int, int] = {}
        wanted = sorted(set(sequences))
        for start in range(0, len(wanted), IN_CHUNK):
            rows = self.session.execute(
                update(deliveries)
                .where(
                    deliveries.c.sequence.in_(wanted[start : start + IN_CHUNK]),
                    deliveries.c.acked_at.is_(None),
                )
                .values(
                    attempts=deliveries.c.attempts + 1,
                    first_sent_at=func.coalesce(
                        deliveries.c.first_sent_at, type_coerce(now, UTCDateTime())
                    ),
                )
                .returning(deliveries.c.sequence, deliveries.c.attempts)
            )
            counted.update((int(s), int(a)) for s, a in rows)
        return counted

    def ack_many(self, acks: Sequence[tuple[str, Sequence[int]]], now: datetime) -> list[int]:
        # (recipient, sequence) pairs, so that an acknowledgement only ever touches its own
        # institution's deliveries even when another's are acknowledged in the same statement.
        pairs = sorted({(code, seq) for code, sequences in acks for seq in sequences})
        done: set[tuple[str, int]] = set()
        for start in range(0, len(pairs), IN_CHUNK // 2):
            rows = self.session.execute(
                update(deliveries)
                .where(
                    tuple_(deliveries.c.recipient, deliveries.c.sequence).in_(
                        pairs[start : start + IN_CHUNK // 2]
                    ),
                    deliveries.c.acked_at.is_(None),
                )
                .values(acked_at=now)
                .returning(deliveries.c.recipient, deliveries.c.sequence)
            )
            done.update((r, int(s)) for r, s in rows)
        counts = []
        for code, sequences in acks:
            # Each row counts once, for the first acknowledgement that named it.
            mine = {(code, s) for s in sequences} & done
            done -= mine
            counts.append(len(mine))
        return counts


# Bound parameters per IN list: SQLite allows 32,766 per statement, PostgreSQL 65,535.
IN_CHUNK = 5_000


def _first_unacked(recipients: Sequence[str], limit: int, *columns: Any) -> Any:
    """(recipient, sequence, *columns) of the first `limit` unacknowledged deliveries of each
    of `recipients`: one query for many institutions instead of one `LIMIT` query each."""
    position = (
        func.row_number()
        .over(partition_by=deliveries.c.recipient, order_by=deliveries.c.sequence)
        .label("position")
    )
    ranked = (
        select(deliveries.c.recipient, deliveries.c.sequence, *columns, position)
        .where(deliveries.c.acked_at.is_(None), deliveries.c.recipient.in_(recipients))
        .subquery()
    )
    return select(*(c for c in ranked.c if c.name != "position")).where(ranked.c.position <= limit)


class PendingRows:
    """Append-only rows (audit entries, SLA log lines) a unit of work writes: kept until the
    commit (or a read of those tables in the same transaction) and inserted then, one
    executemany per table, instead of one statement (and one autoflush) per row."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.audit: list[dict[str, Any]] = []
        self.sla: list[dict[str, Any]] = []
        # Inside a savepoint: how many rows were queued before it, and those of them a flush
        # wrote inside it (a rollback to the savepoint removes them from the database, so
        # they are queued again).
        self._mark: tuple[int, int] | None = None
        self._written_before: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])

    def discard(self) -> None:
        self.audit.clear()
        self.sla.clear()

    def flush(self) -> None:
        new_cases = self.session.info.get(NEW_CASES)
        if new_cases is not None:
            new_cases.write()  # an SLA row names its clock
        for i, (insert, rows) in enumerate(((INSERT_AUDIT, self.audit), (INSERT_SLA, self.sla))):
            if rows:
                batch = rows[:]
                rows.clear()
                if self._mark is not None:
                    before = self._mark[i]
                    self._written_before[i].extend(batch[:before])
                    self._mark = (0, self._mark[1]) if i == 0 else (self._mark[0], 0)
                # The queued rows stay as they were: rows a savepoint's rollback queues again
                # get new ids, and tags over those, when they are written again.
                self.session.execute(insert, self._tagged(batch) if i == 0 else batch)

    def _tagged(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Audit rows with their ids, allocated here, and the hub's tag over each
        (hub.crypto.audittag): one query for the ids, then one INSERT with everything, in the
        transaction that writes the entries."""
        ids = self._new_ids(len(rows))
        kid, key = audittag.KEYS.current()
        tag_of = audittag.tag_of
        out = []
        for entry_id, row in zip(ids, rows, strict=True):
            # The fields exactly as the leaf will hash them; the time as stored (micros of an
            # aware UTC datetime, which both backends keep to the microsecond).
            tag = tag_of(
                key,
                entry_id,
                micros(row["recorded_at"]),
                row["kind"].encode(),
                row["actor"].encode(),
                row["message_id"].encode(),
                (row["case_id"] or "").encode(),
                (row["order_id"] or "").encode(),
                row["detail"].encode(),
                payload_digest(row["payload"]),
            )
            out.append({**row, "id": entry_id, "tag_key": kid, "tag": tag})
        return out

    def _new_ids(self, count: int) -> list[int]:
        # Plain SQL on the transaction's connection: this runs in every transaction that
        # writes an entry, and the ORM's statement path costs more than the query.
        conn = self.session.connection()
        if conn.dialect.name == "sqlite":
            # A writer holds SQLite's write lock from BEGIN IMMEDIATE (make_engine): no one
            # else inserts before this transaction ends, so the next ids are the maximum's.
            top = conn.exec_driver_sql(MAX_AUDIT_ID).scalar() or 0
            return list(range(top + 1, top + 1 + count))
        # PostgreSQL: the column's own sequence, as a default would draw from it (ids are not
        # in commit order across transactions either way; the sequencer orders them).
        drawn = conn.exec_driver_sql(NEXT_AUDIT_IDS, (count,)).scalars().all()
        return sorted(int(i) for i in drawn)

    def mark(self) -> None:
        self._mark = (len(self.audit), len(self.sla))
        self._written_before = ([], [])

    def release(self) -> None:
        self._mark = None

    def rollback_to_mark(self) -> None:
        assert self._mark is not None
        audit, sla = self._mark
        del self.audit[audit:]
        del self.sla[sla:]
        self.audit[:0] = self._written_before[0]
        self.sla[:0] = self._written_before[1]
        self._mark = None


LOG_STATE_ID = 1
MAX_AUDIT_ID = "SELECT max(id) FROM audit_log"
NEXT_AUDIT_IDS = (
    "SELECT nextval(q.seq) FROM (SELECT pg_get_serial_sequence('audit_log', 'id') AS seq) q, "
    "generate_series(1, %s)"
)
REFUSE = (
    update(audit_log)
    .where(audit_log.c.id == bindparam("entry_id"), audit_log.c.log_index.is_(None))
    .values(refused_at=bindparam("at"))
)
ASSIGN_PLACE = (
    update(audit_log)
    .where(audit_log.c.id == bindparam("entry_id"))
    .values(log_index=bindparam("index"), leaf_hash=bindparam("leaf"))
)


class SqlAudit:
    def __init__(
        self, session: Session, pending: PendingRows | None = None, lock_rows: bool = False
    ) -> None:
        self.session = session
        self.pending = pending or PendingRows(session)
        self.lock_rows = lock_rows

    def append(self, entry: AuditEntry, now: datetime) -> None:
        self.pending.audit.append(
            {
                "recorded_at": now,
                "kind": entry.kind,
                "actor": entry.actor,
                "message_id": entry.message_id,
                "case_id": entry.case_id,
                "order_id": entry.order_id,
                "payload": entry.payload,
                "detail": entry.detail,
            }
        )

    def scan(self, after_id: int, limit: int) -> list[AuditRecord]:
        return [r.record for r in self.logged(after_id, limit)]

    def logged(self, after_id: int, limit: int) -> list[LoggedRecord]:
        self.pending.flush()
        rows = self.session.execute(
            select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit)
        )
        return [LoggedRecord(row.log_index, row.leaf_hash, _audit_record(row)) for row in rows]

    def placed(self, from_index: int, limit: int) -> list[LoggedRecord]:
        rows = self.session.execute(
            select(audit_log)
            .where(audit_log.c.log_index >= from_index)
            .order_by(audit_log.c.log_index)
            .limit(limit)
        )
        return [LoggedRecord(row.log_index, row.leaf_hash, _audit_record(row)) for row in rows]

    def leaves(self, size: int) -> list[bytes]:
        rows = self.session.execute(
            select(audit_log.c.leaf_hash)
            .where(audit_log.c.log_index < size, audit_log.c.log_index.is_not(None))
            .order_by(audit_log.c.log_index)
        )
        return [bytes(r[0]) for r in rows]

    def add_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        if nodes:
            self.session.execute(
                audit_log_nodes.insert(),
                [{"height": h, "node_index": i, "node_hash": n} for h, i, n in nodes],
            )

    def nodes(self, height: int, first: int, end: int) -> list[bytes]:
        if height == 0:
            rows = self.session.execute(
                select(audit_log.c.leaf_hash)
                .where(audit_log.c.log_index >= first, audit_log.c.log_index < end)
                .order_by(audit_log.c.log_index)
            )
        else:
            rows = self.session.execute(
                select(audit_log_nodes.c.node_hash)
                .where(
                    audit_log_nodes.c.height == height,
                    audit_log_nodes.c.node_index >= first,
                    audit_log_nodes.c.node_index < end,
                )
                .order_by(audit_log_nodes.c.node_index)
            )
        return [bytes(r[0]) for r in rows if r[0] is not None]

    def log_state(self, *, lock: bool = False) -> LogState:
        stmt = select(audit_log_state).where(audit_log_state.c.id == LOG_STATE_ID)
        if lock and self.lock_rows:
            stmt = stmt.with_for_update()
        row = self.session.execute(stmt).one_or_none()
        if row is None:
            return LogState(0, EMPTY_ROOT, b"")
        return LogState(
            row.tree_size,
            row.root_hash,
            row.compact_range,
            row.untagged_below_id,
            row.untagged_entries,
        )

    def set_log_state(self, state: LogState) -> None:
        values = {
            "tree_size": state.size,
            "root_hash": state.root,
            "compact_range": state.compact_range,
            "untagged_below_id": state.untagged_below_id,
            "untagged_entries": state.untagged_entries,
        }
        done = self.session.execute(
            update(audit_log_state).where(audit_log_state.c.id == LOG_STATE_ID).values(**values)
        )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            self.session.execute(audit_log_state.insert().values(id=LOG_STATE_ID, **values))

    def unsequenced(self, limit: int) -> list[AuditRecord]:
        self.pending.flush()
        # The sealed columns raw, opened one by one: a value that does not open (a row
        # someone else wrote or altered) is the sequencer's to refuse, not an error that
        # would stop it placing every entry after it.
        rows = self.session.execute(
            select(
                *(c for c in audit_log.c if c.name not in ("detail", "payload")),
                type_coerce(audit_log.c.detail, LargeBinary).label("detail"),
                type_coerce(audit_log.c.payload, LargeBinary).label("payload"),
            )
            .where(audit_log.c.log_index.is_(None), audit_log.c.refused_at.is_(None))
            .order_by(audit_log.c.id)
            .limit(limit)
        )
        return [_opened_record(row) for row in rows]

    def assign(self, places: Sequence[tuple[int, int, bytes]]) -> None:
        if places:
            self.session.execute(
                ASSIGN_PLACE,
                [{"entry_id": e, "index": i, "leaf": h} for e, i, h in places],
            )

    def refuse(self, entry_ids: Sequence[int], at: datetime) -> None:
        if entry_ids:
            self.session.execute(REFUSE, [{"entry_id": e, "at": at} for e in entry_ids])

    def add_checkpoint(self, checkpoint: LogCheckpointRow) -> None:
        self.session.execute(
            audit_checkpoints.insert().values(
                tree_size=checkpoint.tree_size,
                root_hash=checkpoint.root_hash,
                signed_at=checkpoint.signed_at,
                envelope=checkpoint.envelope,
            )
        )

    def checkpoints(self) -> list[LogCheckpointRow]:
        rows = self.session.execute(
            select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size)
        )
        return [LogCheckpointRow(r.tree_size, r.root_hash, r.signed_at, r.envelope) for r in rows]

    def latest_checkpoint(self) -> LogCheckpointRow | None:
        # One row by the primary key's index: every member's stream and answer carries it.
        r = self.session.execute(
            select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc()).limit(1)
        ).first()
        return (
            None
            if r is None
            else LogCheckpointRow(r.tree_size, r.root_hash, r.signed_at, r.envelope)
        )

    def checkpoint_of(self, tree_size: int) -> LogCheckpointRow | None:
        r = self.session.execute(
            select(audit_checkpoints).where(audit_checkpoints.c.tree_size == tree_size)
        ).first()
        return (
            None
            if r is None
            else LogCheckpointRow(r.tree_size, r.root_hash, r.signed_at, r.envelope)
        )

    def recorded_times(self, indexes: Collection[int]) -> dict[int, datetime]:
        if not indexes:
            return {}
        rows = self.session.execute(
            select(audit_log.c.log_index, audit_log.c.recorded_at).where(
                audit_log.c.log_index.in_(sorted(indexes))
            )
        )
        return {int(r.log_index): r.recorded_at for r in rows}

    def entry_ids(self, after_id: int, limit: int) -> list[int]:
        self.pending.flush()
        rows = self.session.execute(
            select(audit_log.c.id)
            .where(audit_log.c.id > after_id)
            .order_by(audit_log.c.id)
            .limit(limit)
        )
        return [int(r[0]) for r in rows]

    def endorsements(self) -> list[HubKeyEndorsementRow]:
        rows = self.session.execute(
            select(hub_key_endorsements).order_by(
                hub_key_endorsements.c.endorsed_at, hub_key_endorsements.c.key_id
            )
        )
        return [
            HubKeyEndorsementRow(r.key_id, r.endorsed_by, r.endorsed_at, bytes(r.envelope))
            for r in rows
        ]

    def add_endorsement(self, row: HubKeyEndorsementRow) -> None:
        self.session.execute(
            hub_key_endorsements.insert().values(
                key_id=row.key_id,
                endorsed_by=row.endorsed_by,
                endorsed_at=row.endorsed_at,
                envelope=row.envelope,
            )
        )


def _tag_of_row(value: Any) -> bytes | None:
    # SQLite keeps whatever type a writer stored: a tag stored as text is a wrong tag.
    if value is None or isinstance(value, bytes):
        return value
    return bytes(value) if isinstance(value, bytearray | memoryview) else str(value).encode()


def _opened_record(row: Any) -> AuditRecord:
    """`_audit_record` of a row read with its sealed columns raw."""
    try:
        detail = fields.open_sealed(bytes(row.detail), "audit_log.detail").decode("utf-8")
        payload = (
            None
            if row.payload is None
            else fields.open_sealed(bytes(row.payload), "audit_log.payload")
        )
        unreadable = ""
    except (fields.DataKeyError, TypeError, ValueError) as err:  # ValueError: bad UTF-8
        detail, payload, unreadable = "", None, str(err)
    return AuditRecord(
        row.id,
        row.recorded_at,
        AuditEntry(
            kind=row.kind,
            actor=row.actor,
            message_id=row.message_id,
            detail=detail,
            payload=payload,
            case_id=row.case_id,
            order_id=row.order_id,
        ),
        None if row.tag_key is None else str(row.tag_key),
        _tag_of_row(row.tag),
        row.refused_at,
        unreadable,
    )


def _audit_record(row: Any) -> AuditRecord:
    return AuditRecord(
        row.id,
        row.recorded_at,
        AuditEntry(
            kind=row.kind,
            actor=row.actor,
            message_id=row.message_id,
            detail=row.detail,
            payload=row.payload,
            case_id=row.case_id,
            order_id=row.order_id,
        ),
        None if row.tag_key is None else str(row.tag_key),
        _tag_of_row(row.tag),
        row.refused_at,
    )


class SqlClocks:
    def __init__(
        self,
        session: Session,
        lock_rows: bool,
        pending: PendingRows | None = None,
        new: NewCases | None = None,
    ) -> None:
        self.session = session
        self.lock_rows = lock_rows
        self.pending = pending or PendingRows(session)
        self.new = new or NewCases(session)

    def add(self, clock: CaseClock) -> None:
        # Written with Core with the new cases (caserows.py): one INSERT for a command's.
        self.new.add_clock(clock)

    def open_for_case(self, case_id: str) -> Sequence[CaseClock]:
        self.new.write()
        stmt = select(CaseClock).where(
            clocks.c.case_id == case_id, clocks.c.state == ClockState.OPEN
        )
        if self.lock_rows:
            stmt = stmt.with_for_update()
        with _flushing_only(self.session, CaseClock):
            return self.session.scalars(stmt).all()

    def due(self, now: datetime, limit: int) -> Sequence[CaseClock]:
        self.new.write()
        stmt = (
            select(CaseClock)
            .where(
                clocks.c.state == ClockState.OPEN,
                clocks.c.next_step_at.is_not(None),
                clocks.c.next_step_at <= type_coerce(now, UTCDateTime()),
            )
            .order_by(clocks.c.next_step_at)
            .limit(limit)
        )
        if self.lock_rows:
            stmt = stmt.with_for_update(skip_locked=True)
        return self.session.scalars(stmt).all()

    def get(self, clock_id: str, *, lock: bool = False) -> CaseClock | None:
        self.new.write()
        stmt = select(CaseClock).where(clocks.c.clock_id == clock_id)
        if lock and self.lock_rows:
            stmt = stmt.with_for_update(skip_locked=True)
        return self.session.scalars(stmt).one_or_none()

    def log(self, entry: SlaEntry) -> None:
        self.pending.sla.append(
            {
                "clock_id": entry.clock_id,
                "case_id": entry.case_id,
                "order_id": entry.order_id,
                "kind": entry.kind,
                "event": entry.event,
                "at": entry.at,
                "due_at": entry.due_at,
                "responsible": entry.responsible,
                "late_seconds": entry.late_seconds,
                "detail": entry.detail,
            }
        )

    def query(
        self,
        *,
        institution: str | None,
        case_id: str | None,
        open_only: bool,
        breached_only: bool,
        limit: int,
        offset: int,
        unacknowledged_only: bool = False,
    ) -> Sequence[CaseClock]:
        self.new.write()
        is_open = case((clocks.c.state == ClockState.OPEN, 0), else_=1)
        stmt = (
            select(CaseClock)
            .order_by(is_open, clocks.c.deadline_at, clocks.c.clock_id)
            .limit(limit)
            .offset(offset)
        )
        if institution:
            stmt = stmt.where(clocks.c.responsible == institution)
        if case_id:
            stmt = stmt.where(clocks.c.case_id == case_id)
        if open_only:
            stmt = stmt.where(clocks.c.state == ClockState.OPEN)
        if breached_only:
            stmt = stmt.where(clocks.c.breached.is_(True))
        if unacknowledged_only:
            # `= true`: a range of ix_clocks_breached_acknowledged_at.
            stmt = stmt.where(clocks.c.breached == true(), clocks.c.acknowledged_at.is_(None))
        return self.session.scalars(stmt).all()

    def breached_since(self, since: datetime, limit: int) -> Sequence[CaseClock]:
        self.new.write()
        at = type_coerce(since, UTCDateTime())
        stmt = (
            select(CaseClock)
            # `= true`: the breached clocks are a range of ix_clocks_breached_kind.
            .where(
                clocks.c.breached == true(),
                or_(clocks.c.deadline_at >= at, clocks.c.stopped_at >= at),
            )
            .order_by(clocks.c.deadline_at.desc(), clocks.c.clock_id)
            .limit(limit)
        )
        return self.session.scalars(stmt).all()

    def open_for_cases(self, case_ids: Sequence[str]) -> Sequence[CaseClock]:
        self.new.write()
        if not case_ids:
            return []
        return self.session.scalars(
            select(CaseClock).where(
                clocks.c.state == ClockState.OPEN, clocks.c.case_id.in_(list(case_ids))
            )
        ).all()

    def entries(self, clock_ids: Sequence[str]) -> dict[str, list[SlaEntry]]:
        found: dict[str, list[SlaEntry]] = {c: [] for c in clock_ids}
        if not clock_ids:
            return found
        self.pending.flush()
        rows = self.session.execute(
            select(sla_log).where(sla_log.c.clock_id.in_(clock_ids)).order_by(sla_log.c.id)
        )
        for r in rows:
            found[r.clock_id].append(
                SlaEntry(
                    r.clock_id,
                    r.case_id,
                    r.order_id,
                    r.kind,
                    r.event,
                    r.at,
                    r.due_at,
                    r.responsible,
                    r.late_seconds,
                    r.detail,
                )
            )
        return found


class SqlUnitOfWork:
    """One transaction: state, audit entries and outgoing messages commit together."""

    institutions: InstitutionRepository
    cases: CaseRepository
    rules: RuleRepository
    inbound: InboundRepository
    outbox: Outbox
    audit: AuditLog
    clocks: ClockRepository
    distributions: DistributionRepository
    lists: ListRepository
    appeals: AppealRepository
    leads: LeadRepository
    warnings: WarningRepository
    # Read models for reports (hub/store/reports.py), beyond the ports the handlers drive.
    reports: SqlReports

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        lock_rows: bool,
        gate: threading.RLock | None = None,
    ) -> None:
        self._factory = factory
        self._lock_rows = lock_rows
        self._gate = gate

    def __enter__(self) -> Self:
        if self._gate is not None:
            self._gate.acquire()
        self.session = self._factory()
        self.new_cases = NewCases(self.session)
        self.session.info[NEW_CASES] = self.new_cases
        self.institutions = SqlInstitutions(self.session)
        self.cases = SqlCases(self.session, self._lock_rows, self.new_cases)
        self.rules = SqlRules(self.session)
        self.inbound = SqlInbound(self.session)
        self.outbox = SqlOutbox(self.session)
        self.pending = PendingRows(self.session)
        self.audit = SqlAudit(self.session, self.pending, self._lock_rows)
        self.clocks = SqlClocks(self.session, self._lock_rows, self.pending, self.new_cases)
        self.distributions = SqlDistributions(self.session, self._lock_rows)
        self.lists = SqlLists(self.session, self._lock_rows)
        self.appeals = SqlAppeals(self.session, self._lock_rows)
        self.leads = SqlLeads(self.session, self._lock_rows)
        self.warnings = SqlWarnings(self.session, self._lock_rows)
        self.reports = SqlReports(self.session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() rolls back anything uncommitted; unlike rollback() it leaves loaded objects
        # usable (detached) after the unit of work, for callers that render them.
        try:
            self.session.close()
        except DBAPIError as closing:
            if exc is None and is_unavailable(closing):
                raise StoreUnavailable(str(closing)) from closing
            if exc is None:
                raise
        finally:
            if self._gate is not None:
                self._gate.release()
        if exc is not None and is_unavailable(exc):
            # Raised from __exit__, this replaces the driver's error for the caller.
            raise StoreUnavailable(str(exc)) from exc

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the transaction that rolls back alone when the block raises.

        The first part of a transaction (nothing sent to the database yet) needs no SAVEPOINT:
        rolling the whole transaction back undoes exactly that part. It is the case of every
        request that is not batched with others (ADR 26): SAVEPOINT and RELEASE were two of a
        verification's 21 round trips to PostgreSQL."""
        nested = self.session.begin_nested() if self.session.in_transaction() else None
        self.pending.mark()
        self.new_cases.mark()
        try:
            yield
            self.new_cases.write()
            if nested is not None:
                nested.commit()
            else:
                self.session.flush()  # the part's own constraint errors are its own
        except BaseException as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(str(exc)) from exc
            self.pending.rollback_to_mark()
            try:
                if nested is not None:
                    nested.rollback()
                    self.new_cases.rollback_to_mark()
                else:
                    # Its new cases leave the session before the rollback expires them all.
                    self.new_cases.rollback_to_mark()
                    self.session.rollback()
            except DBAPIError as rolling:
                if is_unavailable(rolling):
                    raise StoreUnavailable(str(rolling)) from exc
                raise
            if must_run_again(exc):
                raise Conflict(str(getattr(exc, "orig", exc))) from exc
            raise
        else:
            self.pending.release()
            self.new_cases.release()

    def commit(self) -> None:
        try:
            self.new_cases.write()
            self.pending.flush()
            self.session.commit()
        except DBAPIError as exc:
            if must_run_again(exc):
                raise Conflict(str(exc.orig)) from exc
            raise

    def rollback(self) -> None:
        self.pending.discard()
        self.new_cases.discard()
        self.session.rollback()
