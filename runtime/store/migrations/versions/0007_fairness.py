"""fairness: the index fair dispatch reads (docs/fairness.md)

Revision ID: 0007_fairness
Revises: 0007_limits
Create Date: 2026-11-30 00:20:00.000000

A partial index of waiting invocations (queued, scheduled, retrying) by tenant, send time
and creation: a tenant's sent ones (`dispatched_at IS NOT NULL`) are counted against its
send window, and its held ones (`dispatched_at IS NULL`) released oldest first. Finished
and running rows are not in it. Building it reads the table and makes writes to
`invocations` wait: on a large table, run it at a quiet time. The columns it works with
(`concurrency_key`, `waiting_reason`) come from 0007_limits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_fairness"
down_revision = "0007_limits"
branch_labels = None
depends_on = None

WAITING = "status IN ('queued', 'scheduled', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invocations_dispatch",
            ["tenant_id", "dispatched_at", "created_at"],
            unique=False,
            postgresql_where=sa.text(WAITING),
            sqlite_where=sa.text(WAITING),
        )


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_dispatch")
