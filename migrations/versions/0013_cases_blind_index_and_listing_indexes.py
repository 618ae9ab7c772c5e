"""cases: the blind index of the victim; indexes for ListCases' filters and deadline order

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10 10:00:00

The victim's name and ID number are sealed (ADR 9) and cannot be compared in SQL. Each case
gets keyed tokens of both, normalised (hub/crypto/blindindex.py, docs/personal-data.md), and
the id of the data key the index key was derived from. The tokens need the keyring, which a
migration may not have: rows written before this revision hold NULL, and the hub fills them
when it starts (`SqlStore.index_victims`, also re-indexing rows made under another index key).
The other indexes serve ListCases: by creation time, by reporter, by a payer's account, and a
case's open clocks by deadline.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("victim_name_token", sa.LargeBinary(length=32), nullable=True)
        )
        batch_op.add_column(sa.Column("victim_id_token", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("victim_index_key", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_cases_victim_name_token", ["victim_name_token"], unique=False)
        batch_op.create_index("ix_cases_victim_id_token", ["victim_id_token"], unique=False)
        batch_op.create_index(
            "ix_cases_created_at_case_id", ["created_at", "case_id"], unique=False
        )
        batch_op.create_index(
            "ix_cases_reporting_institution_created_at",
            ["reporting_institution", "created_at"],
            unique=False,
        )
    with op.batch_alter_table("fraud_transactions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fraud_transactions_payer", ["payer_institution", "payer_account"], unique=False
        )
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_clocks_state_case_id_deadline_at",
            ["state", "case_id", "deadline_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.drop_index("ix_clocks_state_case_id_deadline_at")
    with op.batch_alter_table("fraud_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_fraud_transactions_payer")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_reporting_institution_created_at")
        batch_op.drop_index("ix_cases_created_at_case_id")
        batch_op.drop_index("ix_cases_victim_id_token")
        batch_op.drop_index("ix_cases_victim_name_token")
        batch_op.drop_column("victim_index_key")
        batch_op.drop_column("victim_id_token")
        batch_op.drop_column("victim_name_token")
