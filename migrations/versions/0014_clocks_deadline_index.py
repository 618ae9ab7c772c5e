"""clocks: the open clocks by deadline, for ListCases' deadline order

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 22:00:00

ListCases in deadline order walks the open clocks by deadline and keeps each case's earliest
(an index probe per clock), so a page reads about a page of rows instead of grouping every
open clock of the hub.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_clocks_state_deadline_at", ["state", "deadline_at", "case_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.drop_index("ix_clocks_state_deadline_at")
