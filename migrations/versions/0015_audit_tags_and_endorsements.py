"""audit_log: the hub's tag on each entry; the state row's untagged prefix; hub key endorsements

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 01:40:00

Each audit entry gets a tag the hub makes in the entry's transaction, under a key derived
from its data keys (never in the database), so that a row written by anyone else is refused
by the sequencer and named by `audit verify` (issue 21, docs/audit.md). A migration has no
data keys: entries already written keep no tag. `untagged_below_id` marks them (every id
below it), and the sequencer counts how many of them take the first places of the tree
(`untagged_entries`, signed in each checkpoint). `hub_key_endorsements` keeps the hub's old
keys' signatures over its new ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tag_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("tag", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("refused_at", _UTC, nullable=True))
    with op.batch_alter_table("audit_log_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("untagged_below_id", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("untagged_entries", sa.BigInteger(), server_default="0", nullable=False)
        )
    # Every entry written so far is untagged; the state row says so (and is made if the
    # sequencer has not placed anything yet). Every position placed so far holds one of them.
    conn = op.get_bind()
    top = conn.execute(sa.text("SELECT max(id) FROM audit_log")).scalar()
    if top is not None:
        updated = conn.execute(
            sa.text(
                "UPDATE audit_log_state SET untagged_below_id = :below, "
                "untagged_entries = tree_size WHERE id = 1"
            ),
            {"below": int(top) + 1},
        )
        if updated.rowcount == 0:
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log_state (id, tree_size, root_hash, compact_range, "
                    "untagged_below_id, untagged_entries) "
                    "VALUES (1, 0, :root, :nodes, :below, 0)"
                ),
                {
                    "root": bytes.fromhex(
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                    ),
                    "nodes": b"",
                    "below": int(top) + 1,
                },
            )
    op.create_table(
        "hub_key_endorsements",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("endorsed_by", sa.String(length=64), nullable=False),
        sa.Column("endorsed_at", _UTC, nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )


def downgrade() -> None:
    op.drop_table("hub_key_endorsements")
    with op.batch_alter_table("audit_log_state", schema=None) as batch_op:
        batch_op.drop_column("untagged_entries")
        batch_op.drop_column("untagged_below_id")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("refused_at")
        batch_op.drop_column("tag")
        batch_op.drop_column("tag_key")
