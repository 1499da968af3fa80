"""secrets: tenants' encrypted secrets (function secrets, webhook signing secrets)

Revision ID: 0010_secrets
Revises: 0009_sessions
Create Date: 2026-11-30 00:30:00.000000

One table, `tenant_secrets`, keyed by tenant, kind (`function` or `webhook`) and name.
Values are sealed with AES-GCM under a key derived from FERRY_SECRET_KEY
(`runtime.secrets.crypto`); the table never holds one in the clear. Webhook signing
secrets were derived from FERRY_SECRET_KEY before: each tenant gets a random one on first
use, so receivers must be given the new secret (docs/operations.md, "Upgrading").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_secrets"
down_revision = "0009_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_secrets",
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_tenant_secrets_tenant_id_tenants"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "name", name="pk_tenant_secrets"),
    )


def downgrade() -> None:
    op.drop_table("tenant_secrets")
