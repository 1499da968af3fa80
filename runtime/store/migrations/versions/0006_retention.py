"""retention: per-tenant retention of finished invocations, and the index that finds them

Revision ID: 0006_retention
Revises: 0005_operators
Create Date: 2026-11-24 10:00:00.000000

Three nullable columns on `tenants` (NULL: the deployment's `FERRY_RETENTION_*_S`), and a
partial index of finished invocations by tenant, status and finish time, which retention
walks oldest first. Only finished rows are in it, so accepting and claiming add nothing;
finishing adds one entry. Building it reads the whole table and makes writes to
`invocations` wait until it is built: on a large table, run it at a quiet time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_retention"
down_revision = "0005_operators"
branch_labels = None
depends_on = None

FINISHED = "status IN ('succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retention_succeeded_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("retention_failed_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("retention_cancelled_s", sa.Integer(), nullable=True))
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invocations_finished",
            ["tenant_id", "status", "finished_at"],
            unique=False,
            postgresql_where=sa.text(FINISHED),
            sqlite_where=sa.text(FINISHED),
        )


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_finished")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("retention_cancelled_s")
        batch_op.drop_column("retention_failed_s")
        batch_op.drop_column("retention_succeeded_s")
