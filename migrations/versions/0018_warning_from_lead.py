"""a warning names the lead it was raised from

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 01:35:00

A lead's triage may accept it by warning a member (TriageLead warn_member, docs/leads.md):
the lead keeps the warning's id (leads.warning_id, 0016) and the warning the lead's, so each
reads the other. Warnings sent before are from no lead: "".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lead_id", sa.String(length=40), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("warnings", schema=None) as batch_op:
        batch_op.drop_column("lead_id")
