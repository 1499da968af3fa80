"""audit: the append-only audit trail of `manage` and `admin` actions

Revision ID: 0008_audit
Revises: 0007_rls
Create Date: 2026-11-30 00:20:00.000000

One new table, `audit_records`, with two indexes: by time (operators' listings and
retention, which removes the oldest) and by tenant and time (a tenant's listing). Rows
are only inserted (with the change they record) and removed by retention; a trigger
refuses any UPDATE of them on both backends, whoever sends it (a function's
`ctx.session` included).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_audit"
down_revision = "0007_rls"
branch_labels = None
depends_on = None

REFUSAL = "audit records are append-only"
SQLITE_TRIGGER = f"""
CREATE TRIGGER audit_records_append_only BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
"""
PG_FUNCTION = f"""
CREATE FUNCTION ferry_audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$
"""
PG_TRIGGER = """
CREATE TRIGGER audit_records_append_only BEFORE UPDATE ON audit_records
FOR EACH ROW EXECUTE FUNCTION ferry_audit_records_append_only()
"""


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index("ix_audit_records_at_id", "audit_records", ["at", "id"], unique=False)
    op.create_index(
        "ix_audit_records_tenant_id_at_id",
        "audit_records",
        ["tenant_id", "at", "id"],
        unique=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_records_append_only ON audit_records")
        op.execute("DROP FUNCTION IF EXISTS ferry_audit_records_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_records_append_only")
    op.drop_index("ix_audit_records_tenant_id_at_id", table_name="audit_records")
    op.drop_index("ix_audit_records_at_id", table_name="audit_records")
    op.drop_table("audit_records")
