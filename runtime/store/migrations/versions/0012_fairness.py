"""fairness: the indexes fair dispatch reads (docs/fairness.md)

Revision ID: 0012_fairness
Revises: 0011_limits
Create Date: 2026-11-30 00:20:00.000000

Two partial indexes of waiting invocations (queued, scheduled, retrying) by tenant: those
held in the store (`dispatched_at IS NULL`), by creation, which a release takes oldest
first; and those sent and not yet started (`dispatched_at IS NOT NULL`), which are counted
against the tenant's send window. Each holds only those rows, so neither read passes over
finished or running work. Building them reads the table and makes writes to `invocations`
wait: on a large table, run it at a quiet time. The columns fair dispatch writes
(`concurrency_key`, `waiting_reason`) come from 0011_limits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_fairness"
down_revision = "0011_limits"
branch_labels = None
depends_on = None

HELD = "dispatched_at IS NULL AND status IN ('queued', 'scheduled', 'retrying')"
SENT = "dispatched_at IS NOT NULL AND status IN ('queued', 'scheduled', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invocations_held",
            ["tenant_id", "created_at"],
            unique=False,
            postgresql_where=sa.text(HELD),
            sqlite_where=sa.text(HELD),
        )
        batch_op.create_index(
            "ix_invocations_sent",
            ["tenant_id"],
            unique=False,
            postgresql_where=sa.text(SENT),
            sqlite_where=sa.text(SENT),
        )


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_sent")
        batch_op.drop_index("ix_invocations_held")
