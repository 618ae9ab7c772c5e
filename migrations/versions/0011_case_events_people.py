"""case_events: the people behind a step (envelope operator and approver)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 09:00:00

A signed envelope may name the person at the sender who made it (`operator`, field 10) and
the second person who approved it (`approver`, field 11; docs/signing.md). The timeline step
the message caused keeps both, sealed like the rest of the timeline's text (ADR 9). Steps
recorded before this revision hold NULL: nobody was named then.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operator", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("approver", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.drop_column("approver")
        batch_op.drop_column("operator")
