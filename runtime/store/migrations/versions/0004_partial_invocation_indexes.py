"""invocations: index only unfinished work for the sweep, and only child invocations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:30:00.000000

Every invocation changes status twice on its way (claimed, then finished), and a status
change cannot be a heap-only update while an index covers `status`: each one adds an
entry to every index of the table. A partial index leaves out rows outside its
predicate, so finishing an invocation no longer adds an entry to the sweep's index, and
the index holds only the unfinished rows the sweep looks for, however many finished
ones the table keeps. Likewise most invocations have no parent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNFINISHED = "status IN ('queued', 'scheduled', 'retrying', 'running')"
HAS_PARENT = "parent_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_status_scheduled_for")
        batch_op.drop_index("ix_invocations_parent_id")
        batch_op.create_index(
            "ix_invocations_unfinished",
            ["status", "scheduled_for"],
            unique=False,
            postgresql_where=sa.text(UNFINISHED),
            sqlite_where=sa.text(UNFINISHED),
        )
        batch_op.create_index(
            "ix_invocations_parent_id",
            ["parent_id"],
            unique=False,
            postgresql_where=sa.text(HAS_PARENT),
            sqlite_where=sa.text(HAS_PARENT),
        )


def downgrade() -> None:
    with op.batch_alter_table("invocations", schema=None) as batch_op:
        batch_op.drop_index("ix_invocations_parent_id")
        batch_op.drop_index("ix_invocations_unfinished")
        batch_op.create_index("ix_invocations_parent_id", ["parent_id"], unique=False)
        batch_op.create_index(
            "ix_invocations_status_scheduled_for", ["status", "scheduled_for"], unique=False
        )
