"""limits: per-tenant limits, the accept-rate buckets, and what concurrency limits read

Revision ID: 0007_limits
Revises: 0006_retention
Create Date: 2026-11-30 00:30:00.000000

Five nullable columns on `tenants` (NULL: the deployment's `FERRY_DEFAULT_*`), a table of
token buckets (one row per tenant that has a rate limit, written once per accept), two
nullable columns on `invocations` (the per-key concurrency key taken from the input, and
why a claimable invocation is held back), and a partial index of unfinished invocations by
tenant, status and function, from which waiting and running counts are read. Adding
nullable columns rewrites nothing; the index reads the unfinished rows only, and on a
large table makes writes to `invocations` wait while it is built.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_limits"
down_revision = "0006_retention"
branch_labels = None
depends_on = None

UNFINISHED = "status IN ('queued', 'scheduled', 'retrying', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_per_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("burst", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("concurrency", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_waiting", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("weight", sa.Integer(), nullable=True))
    op.create_table(
        "rate_buckets",
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_rate_buckets_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_rate_buckets")),
    )
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("concurrency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("waiting_reason", sa.String(length=32), nullable=True))
        batch_op.create_index(
            "ix_invocations_tenant_unfinished",
            ["tenant_id", "status", "function"],
            unique=False,
            postgresql_where=sa.text(UNFINISHED),
            sqlite_where=sa.text(UNFINISHED),
        )


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_tenant_unfinished")
        batch_op.drop_column("waiting_reason")
        batch_op.drop_column("concurrency_key")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("weight")
        batch_op.drop_column("max_waiting")
        batch_op.drop_column("concurrency")
        batch_op.drop_column("burst")
        batch_op.drop_column("rate_per_s")
