"""clocks: a breach acknowledged by a person

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10 09:30:00

SlaService.AcknowledgeBreach (docs/clocks.md) records on the clock when a person acknowledged
its breach, the institution, the person (sealed: a staff id or a name) and their note (sealed:
free text). Clocks from before this revision read as not acknowledged. The index serves the
escalation inbox (ListClocks with unacknowledged_only).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("acknowledged_by", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("acknowledged_operator", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("acknowledge_note", sa.LargeBinary(), nullable=True))
        batch_op.create_index(
            "ix_clocks_breached_acknowledged_at", ["breached", "acknowledged_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.drop_index("ix_clocks_breached_acknowledged_at")
        batch_op.drop_column("acknowledge_note")
        batch_op.drop_column("acknowledged_operator")
        batch_op.drop_column("acknowledged_by")
        batch_op.drop_column("acknowledged_at")
