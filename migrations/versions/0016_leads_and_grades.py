"""leads and lead_accounts; cases.grade; clocks may time a lead (no foreign key to cases)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 00:30:00

Issue 23: members hand the centre leads (docs/leads.md), cases and leads carry a three-colour
grade (docs/grades.md). A lead's triage clock is a row of `clocks` whose case_id holds the
lead's id, so the clocks' foreign key to cases goes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def _sealed(context: str) -> sa.LargeBinary:
    # A sealed column (hub/crypto/fields.py) is bytes at rest; `context` names it.
    del context
    return sa.LargeBinary()


def upgrade() -> None:
    op.create_table(
        "leads",
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("submitter", sa.String(length=32), nullable=False),
        sa.Column("grade", sa.String(length=8), nullable=False),
        sa.Column("submitted_grade", sa.String(length=8), nullable=False),
        sa.Column("grounds", _sealed("leads.grounds"), nullable=False),
        sa.Column("accounts_json", _sealed("leads.accounts_json"), nullable=False),
        sa.Column("transactions_json", _sealed("leads.transactions_json"), nullable=False),
        sa.Column("evidence_json", sa.Text(), nullable=False),
        sa.Column("submitted_at", _UTC, nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("triage_clock_id", sa.String(length=40), nullable=False),
        sa.Column("triage_by", _UTC, nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("decided_at", _UTC, nullable=True),
        sa.Column("decided_by", sa.String(length=32), nullable=False),
        sa.Column("case_id", sa.String(length=40), nullable=False),
        sa.Column("list_entry_id", sa.String(length=40), nullable=False),
        sa.Column("warning_id", sa.String(length=40), nullable=False),
        sa.Column("reason", _sealed("leads.reason"), nullable=False),
        sa.Column("exchanges_json", _sealed("leads.exchanges_json"), nullable=False),
        sa.Column("grade_rank", sa.Integer(), nullable=False),
        sa.Column("queue_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["submitter"], ["institutions.code"], name=op.f("fk_leads_submitter_institutions")
        ),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_leads")),
    )
    op.create_index("ix_leads_queue", "leads", ["grade_rank", "queue_at", "lead_id"])
    op.create_index("ix_leads_submitter_submitted_at", "leads", ["submitter", "submitted_at"])
    op.create_table(
        "lead_accounts",
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("institution_code", sa.String(length=32), nullable=False),
        sa.Column("account_number", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.lead_id"], name=op.f("fk_lead_accounts_lead_id_leads")
        ),
        sa.PrimaryKeyConstraint(
            "lead_id", "institution_code", "account_number", name=op.f("pk_lead_accounts")
        ),
    )
    op.create_index(
        "ix_lead_accounts_account", "lead_accounts", ["institution_code", "account_number"]
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("grade", sa.String(length=8), server_default="", nullable=False)
        )
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.drop_constraint("fk_clocks_case_id_cases", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("clocks", schema=None) as batch_op:
        batch_op.create_foreign_key("fk_clocks_case_id_cases", "cases", ["case_id"], ["case_id"])
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_column("grade")
    op.drop_index("ix_lead_accounts_account", table_name="lead_accounts")
    op.drop_table("lead_accounts")
    op.drop_index("ix_leads_submitter_submitted_at", table_name="leads")
    op.drop_index("ix_leads_queue", table_name="leads")
    op.drop_table("leads")
