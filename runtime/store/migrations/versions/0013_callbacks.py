"""callbacks: completion callbacks of invocations and their delivery state

Revision ID: 0013_callbacks
Revises: 0012_fairness
Create Date: 2026-11-30 01:20:00.000000

One table, `invocation_callbacks`: at most one row per invocation (the URL it reports to
when it finishes), written with the invocation, and the delivery's state (`pending`,
`delivered`, `failed`), attempts, last error and time of delivery. Removed with its
invocation. See docs/callbacks.md.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_callbacks"
down_revision = "0012_fairness"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invocation_callbacks",
        sa.Column("invocation_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["invocation_id"],
            ["invocations.id"],
            name="fk_invocation_callbacks_invocation_id_invocations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("invocation_id", name="pk_invocation_callbacks"),
    )
    op.create_index(
        "ix_invocation_callbacks_pending",
        "invocation_callbacks",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_invocation_callbacks_pending", table_name="invocation_callbacks")
    op.drop_table("invocation_callbacks")
