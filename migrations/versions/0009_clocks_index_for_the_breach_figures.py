"""clocks indexes for the metrics figures

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 18:29:42

The metrics snapshot counts the open clocks and the breached ones by kind every few seconds.
It read every clock the hub ever ran, closed ones included; with (state, kind, breached) and
(breached, kind) each count reads its own rows from a covering index. Only (state, kind,
breached) makes SQLite's planner search the open clocks once the table is analysed: with
the sweep's (state, next_step_at) it scanned the whole breach index instead.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_clocks_state_kind_breached", "clocks", ["state", "kind", "breached"], unique=False
    )
    op.create_index("ix_clocks_breached_kind", "clocks", ["breached", "kind"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_clocks_breached_kind", table_name="clocks")
    op.drop_index("ix_clocks_state_kind_breached", table_name="clocks")
