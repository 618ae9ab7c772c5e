"""personal data sealed at rest; institution_keys.not_after

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:02:34.252353

Names, ID numbers, phones, free text and every stored signed envelope become AES-256-GCM
sealed BLOB/BYTEA values (ADR 9). Existing rows are sealed here with the configured data
keys; a database that holds rows cannot be migrated without them. The column list is a
snapshot of this revision, not read from the models, so later model changes cannot alter
what this revision does.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from hub.crypto import fields

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = sa.String(length=200)
SHORT = sa.String(length=64)

# table: (primary key, {text column: its type before}, [binary columns])
SEALED: dict[str, tuple[tuple[str, ...], dict[str, sa.types.TypeEngine[Any]], list[str]]] = {
    "duty_contacts": (
        ("institution_code", "position"),
        {"name": NAME, "phone": SHORT, "email": NAME},
        [],
    ),
    "cases": (
        ("case_id",),
        {
            "victim_name": NAME,
            "victim_id_number": SHORT,
            "victim_phone": SHORT,
            "description": sa.Text(),
            "verification_reason": sa.Text(),
        },
        ["report_envelope"],
    ),
    "fraud_transactions": (("case_id", "position"), {"payer_name": NAME, "payee_name": NAME}, []),
    "orders": (
        ("order_id",),
        {"holder_name": NAME, "note": sa.Text(), "result_reason": sa.Text()},
        ["origin_envelope", "authorization_envelope", "answer_envelope"],
    ),
    "onward_transfers": (("order_id", "position"), {"to_holder": NAME}, []),
    "case_events": (("case_id", "sequence"), {"summary": sa.Text()}, []),
    "auto_stop_rules": (("centre_code",), {}, ["envelope"]),
    "inbound_messages": (("sender", "message_id"), {}, ["response"]),
    "deliveries": (("sequence",), {}, ["envelope"]),
    "audit_log": (("id",), {"detail": sa.Text()}, ["payload"]),
}


def _specs() -> list[fields.SealedTable]:
    return [
        fields.SealedTable(name, pk, (*text, *blobs)) for name, (pk, text, blobs) in SEALED.items()
    ]


def _keyring_if_needed() -> fields.Keyring | None:
    """The data keys, or None when no table holds a row (a fresh database needs none)."""
    conn = op.get_bind()
    has_rows = any(
        conn.execute(sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)).first()
        for name in SEALED
    )
    if not has_rows:
        return None
    ring = fields.configured()
    if ring is not None:
        return ring
    try:
        return fields.resolve_keyring()
    except fields.DataKeysNotConfigured as err:
        raise RuntimeError(
            "revision 0003 seals the personal data already in this database and needs the "
            f"data keys: {err}. Then run the migration again."
        ) from err


def _retype(name: str, text: dict[str, sa.types.TypeEngine[Any]], *, to_binary: bool) -> None:
    """Text columns to LargeBinary (their UTF-8 bytes) or back."""
    if not text:
        return
    if op.get_bind().dialect.name == "postgresql":
        for column, old in text.items():
            new, existing = (sa.LargeBinary(), old) if to_binary else (old, sa.LargeBinary())
            how = "convert_to" if to_binary else "convert_from"
            op.alter_column(
                name,
                column,
                type_=new,
                existing_type=existing,
                existing_nullable=False,
                postgresql_using=f"{how}(\"{column}\", 'UTF8')",
            )
        return
    with op.batch_alter_table(name) as batch:  # SQLite: one table copy for all its columns
        for column, old in text.items():
            new, existing = (sa.LargeBinary(), old) if to_binary else (old, sa.LargeBinary())
            batch.alter_column(column, type_=new, existing_type=existing, existing_nullable=False)
    if not to_binary:
        # SQLite keeps a copied BLOB a BLOB in a TEXT column: make the values text again.
        for column in text:
            op.execute(f'UPDATE "{name}" SET "{column}" = CAST("{column}" AS TEXT)')


def upgrade() -> None:
    ring = _keyring_if_needed()  # first: a refusal leaves the database as it was
    with op.batch_alter_table("institution_keys") as batch:
        batch.add_column(sa.Column("not_after", sa.DateTime(timezone=True), nullable=True))

    for name, (_pk, text, _blobs) in SEALED.items():
        _retype(name, text, to_binary=True)
    if ring is None:
        return
    conn = op.get_bind()
    for spec in _specs():
        fields.rewrite_rows(
            conn,
            spec,
            lambda col, value, spec=spec: ring.seal(fields.as_bytes(value), spec.context(col)),
        )


def downgrade() -> None:
    ring = _keyring_if_needed()
    if ring is not None:
        conn = op.get_bind()
        for spec in _specs():
            fields.rewrite_rows(
                conn,
                spec,
                lambda col, value, spec=spec: ring.open(bytes(value), spec.context(col)),
            )
    for name, (_pk, text, _blobs) in SEALED.items():
        _retype(name, text, to_binary=False)

    with op.batch_alter_table("institution_keys") as batch:
        batch.drop_column("not_after")
