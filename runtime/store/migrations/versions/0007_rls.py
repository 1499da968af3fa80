"""rls: row-level security policies scoping functions' sessions to their tenant

Revision ID: 0007_rls
Revises: 0006_retention
Create Date: 2026-11-30 00:30:00.000000

PostgreSQL only (nothing on SQLite). Row-level security on the tables a function may read,
each with a policy `ferry_tenant_scope` that shows a row when its tenant column equals
the transaction's `ferry.tenant_id` setting. The tables' owner (the role that runs the
migrations and the runtime) is not subject to it, so the runtime sees every row as
before; the function role is (runtime/store/tenant_scope.py, docs/tenancy.md). Any other
role that is neither owner nor BYPASSRLS now sees no row of these tables unless it sets
`ferry.tenant_id`. The role and its grants are not made here: `ferry migrate` grants
them after the migrations, once the operator has created the role.
"""

from __future__ import annotations

from alembic import op

revision = "0007_rls"
down_revision = "0006_retention"
branch_labels = None
depends_on = None

#: The tables a function may read and each one's tenant column (as of this revision).
SCOPED = {
    "tenants": "id",
    "api_keys": "tenant_id",
    "invocations": "tenant_id",
    "attempts": "tenant_id",
    "schedule_runs": "tenant_id",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in SCOPED.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY ferry_tenant_scope ON {table}"
            f" USING ({column} = current_setting('ferry.tenant_id', true))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in SCOPED:
        op.execute(f"DROP POLICY IF EXISTS ferry_tenant_scope ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
