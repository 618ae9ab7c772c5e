"""The console's own small database: people, their sessions, proposals waiting for a second
person, the journal of what each person did, the deliveries the hub sent this institution, and
who claimed which case. Never the hub's database: the console reads the hub over gRPC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) and
    PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the console's database")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    # officer | supervisor | viewer
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # zh | en: the language this person reads the console in.
    language: Mapped[str] = mapped_column(String(8), default="zh")
    # Set by `stophub console user reset`: the next login must choose a new password.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Session(Base):
    __tablename__ = "sessions"

    # SHA-256 of the cookie's token: a copy of this table logs nobody in.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    ended: Mapped[bool] = mapped_column(Boolean, default=False)


class Proposal(Base):
    """An action a maker asked for that waits for a supervisor's approval."""

    __tablename__ = "proposals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    # The action's validated form, as JSON.
    payload: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    case_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    maker: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    # pending | done | failed | rejected | expired
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    message_id: Mapped[str] = mapped_column(String(128), default="")
    outcome: Mapped[str] = mapped_column(Text, default="")


class JournalEntry(Base):
    """What a person did at this console: every action, proposal, decision and refusal."""

    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    person: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    summary: Mapped[str] = mapped_column(Text)
    approver: Mapped[str] = mapped_column(String(64), default="")
    message_id: Mapped[str] = mapped_column(String(128), default="")
    # done | proposed | approved | rejected | refused | failed | expired | login | logout
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class StoredDelivery(Base):
    """A delivery from the hub's stream, kept before it is acknowledged."""

    __tablename__ = "deliveries"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    case_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    order_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    # The hub-signed envelope as it arrived, bytes and all (docs/signing.md).
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    # Set when a person has dealt with it (answered the order, acknowledged the breach).
    handled_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    handled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Claim(Base):
    """Who at this institution is working a case (the centre's queue)."""

    __tablename__ = "claims"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class KeptCheckpoint(Base):
    """A signed checkpoint of the hub's audit log this console has seen (the regulator's and
    auditors' desks), kept byte for byte: each new one is proved consistent with the largest
    good one kept before it, so a hub that rewrites or rolls back its log is caught."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(Integer, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    key_id: Mapped[str] = mapped_column(String(128))
    # The hub-signed envelope as it arrived (docs/audit.md): anyone can check it offline.
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    # first | consistent | rollback | fork
    verdict: Mapped[str] = mapped_column(String(16))
    # The size of the kept checkpoint it was proved against (None for the first).
    checked_against: Mapped[int | None] = mapped_column(Integer, nullable=True)
    problem: Mapped[str] = mapped_column(Text, default="")
