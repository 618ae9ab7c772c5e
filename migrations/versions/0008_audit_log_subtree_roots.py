"""audit log subtree roots

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 15:45:00

The roots of the audit log's perfect subtrees at every 8th height (ADR 16), so inclusion and
consistency proofs read O(log n) rows instead of every leaf hash. The sequencer writes them
from now on; this revision computes them for the entries already placed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from hub.domain.merkle import CompactRange

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log_nodes",
        sa.Column("height", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("height", "node_index", name=op.f("pk_audit_log_nodes")),
    )
    conn = op.get_bind()
    leaves = conn.execute(
        sa.text("SELECT leaf_hash FROM audit_log WHERE log_index IS NOT NULL ORDER BY log_index")
    )
    tree = CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for (leaf,) in leaves:
        tree.append(bytes(leaf), nodes)
    if nodes:
        conn.execute(
            sa.text(
                "INSERT INTO audit_log_nodes (height, node_index, node_hash) VALUES (:h, :i, :n)"
            ),
            [{"h": h, "i": i, "n": n} for h, i, n in nodes],
        )


def downgrade() -> None:
    op.drop_table("audit_log_nodes")
