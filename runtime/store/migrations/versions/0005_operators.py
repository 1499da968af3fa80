"""api_keys: a key may belong to no tenant (an operator key)

Revision ID: 0005_operators
Revises: 0004
Create Date: 2026-11-24 10:00:00.000000

`admin` was a scope of a tenant's key, so a suspended tenant's admin key still acted
for every tenant. It now belongs to operator keys alone, which have no tenant: their
`tenant_id` is NULL. Existing tenant keys listing `admin` are left as they are and are
refused when presented (docs/operations.md, "Upgrading"); this migration changes no row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_operators"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=sa.String(length=63), nullable=True)


def downgrade() -> None:
    # Operator keys have no tenant to go back to: they are removed first.
    op.execute("DELETE FROM api_keys WHERE tenant_id IS NULL")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=sa.String(length=63), nullable=False)
