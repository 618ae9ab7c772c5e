"""clocks: whether a deadline was estimated

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 17:30:00

A working-day deadline counted over a year the hub had no official holiday calendar for
(neither the policy file's [calendar.YEAR] nor the chinesecalendar package) is an estimate:
Monday to Friday stood in for the State Council's days off and make-up working days. The
clock keeps that fact with its deadline, so every view of it can say so (issue 19 item 22).
Clocks started before this revision read as not estimated: whether they were is not known.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deadline_estimated", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.drop_column("deadline_estimated")
