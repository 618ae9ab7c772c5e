"""SQLAlchemy repositories and the unit of work, on SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    Engine,
    and_,
    case,
    create_engine,
    event,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.cases import Case, CaseState
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.institutions import Institution, InstitutionKind
from hub.domain.rules import AutoStopRule
from hub.service.ports import (
    AuditEntry,
    AuditLog,
    AuditRecord,
    CaseRepository,
    ClockRepository,
    Conflict,
    InboundRecord,
    InboundRepository,
    InstitutionRepository,
    Outbox,
    PendingDelivery,
    RuleRepository,
    StoreUnavailable,
    UnitOfWork,
)
from hub.store.tables import (
    UTCDateTime,
    audit_log,
    auto_stop_rules,
    cases,
    clocks,
    deliveries,
    inbound_messages,
    institutions,
    map_domain,
    orders,
    sla_log,
)

# Built once: an insert built per call with .values(...) costs several times its execution
# in statement construction and cache-key work (bench/clocks.py profiles showed ~4x).
INSERT_INBOUND = inbound_messages.insert()
INSERT_DELIVERY = deliveries.insert().returning(deliveries.c.sequence)
INSERT_AUDIT = audit_log.insert()
INSERT_SLA = sla_log.insert()


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and a bare file path for SQLite."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
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
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

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


class SqlStore:
    """Engines and session factories for one database."""

    def __init__(self, url: str) -> None:
        map_domain()
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.read_engine = make_engine(self.url, read_only=True) if self.is_sqlite else self.engine
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)

    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        factory = self._read_sessions if read_only else self._sessions
        return SqlUnitOfWork(factory, lock_rows=not self.is_sqlite)

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


class SqlCases:
    def __init__(self, session: Session, lock_rows: bool) -> None:
        self.session = session
        self.lock_rows = lock_rows

    def case_id_of_order(self, order_id: str) -> str | None:
        return self.session.scalar(select(orders.c.case_id).where(orders.c.order_id == order_id))

    def get(self, case_id: str, *, lock: bool = False) -> Case | None:
        if lock and self.lock_rows:
            # Serialises every command on one case across replicas (SQLite: the write lock).
            return self.session.scalars(
                select(Case).where(cases.c.case_id == case_id).with_for_update()
            ).one_or_none()
        return self.session.get(Case, case_id)

    def add(self, case: Case) -> None:
        self.session.add(case)

    def list(
        self,
        state: CaseState | None,
        page_size: int,
        after: tuple[datetime, str] | None,
        reporter: str | None = None,
    ) -> Sequence[Case]:
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
        except IntegrityError as exc:
            # A twin request committed this id first (PostgreSQL lets both get this far).
            raise Conflict(f"{sender}/{message_id} was stored concurrently") from exc


class SqlOutbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self, recipient: str, kind: str, case_id: str | None, envelope: bytes, now: datetime
    ) -> int:
        result = self.session.execute(
            INSERT_DELIVERY,
            {
                "recipient": recipient,
                "kind": kind,
                "case_id": case_id,
                "envelope": envelope,
                "created_at": now,
                "attempts": 0,
            },
        )
        return int(result.scalar_one())

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


class PendingRows:
    """Append-only rows (audit entries, SLA log lines) a unit of work writes: kept until the
    commit (or a read of those tables in the same transaction) and inserted then, one
    executemany per table, instead of one statement (and one autoflush) per row."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.audit: list[dict[str, Any]] = []
        self.sla: list[dict[str, Any]] = []

    def discard(self) -> None:
        self.audit.clear()
        self.sla.clear()

    def flush(self) -> None:
        for insert, rows in ((INSERT_AUDIT, self.audit), (INSERT_SLA, self.sla)):
            if rows:
                batch = rows[:]
                rows.clear()
                self.session.execute(insert, batch)


class SqlAudit:
    def __init__(self, session: Session, pending: PendingRows | None = None) -> None:
        self.session = session
        self.pending = pending or PendingRows(session)

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
        self.pending.flush()
        rows = self.session.execute(
            select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit)
        )
        return [
            AuditRecord(
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
            )
            for row in rows
        ]


class SqlClocks:
    def __init__(
        self, session: Session, lock_rows: bool, pending: PendingRows | None = None
    ) -> None:
        self.session = session
        self.lock_rows = lock_rows
        self.pending = pending or PendingRows(session)

    def add(self, clock: CaseClock) -> None:
        self.session.add(clock)

    def open_for_case(self, case_id: str) -> Sequence[CaseClock]:
        stmt = select(CaseClock).where(
            clocks.c.case_id == case_id, clocks.c.state == ClockState.OPEN
        )
        if self.lock_rows:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).all()

    def due(self, now: datetime, limit: int) -> Sequence[CaseClock]:
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
    ) -> Sequence[CaseClock]:
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
        return self.session.scalars(stmt).all()

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

    def __init__(self, factory: sessionmaker[Session], *, lock_rows: bool) -> None:
        self._factory = factory
        self._lock_rows = lock_rows

    def __enter__(self) -> Self:
        self.session = self._factory()
        self.institutions = SqlInstitutions(self.session)
        self.cases = SqlCases(self.session, self._lock_rows)
        self.rules = SqlRules(self.session)
        self.inbound = SqlInbound(self.session)
        self.outbox = SqlOutbox(self.session)
        self.pending = PendingRows(self.session)
        self.audit = SqlAudit(self.session, self.pending)
        self.clocks = SqlClocks(self.session, self._lock_rows, self.pending)
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
        if exc is not None and is_unavailable(exc):
            # Raised from __exit__, this replaces the driver's error for the caller.
            raise StoreUnavailable(str(exc)) from exc

    def commit(self) -> None:
        try:
            self.pending.flush()
            self.session.commit()
        except IntegrityError as exc:
            raise Conflict(str(exc.orig)) from exc

    def rollback(self) -> None:
        self.pending.discard()
        self.session.rollback()
