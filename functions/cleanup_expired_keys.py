"""Delete the tenant's API keys that expired or were revoked more than `grace_days` ago.

A retention job, meant to run on a schedule. An expired or revoked key stops working
at once; its row is kept for `grace_days` so "why was I refused?" can still be
answered, then this function removes it.

Input: `grace_days` (default 7; 0 deletes every expired or revoked key) and `dry_run`
(default false: when true, nothing is deleted and the output lists what would be).

Output: `deleted`, how many keys were deleted (in a dry run: would be); `key_ids`,
their public ids (never a secret or its hash); `cutoff`, the time before which an
expiry or revocation counts; and `dry_run`.

Internal: schedules (and operator keys) run it; a tenant's key cannot invoke it over
HTTP, so no client can delete a tenant's revoked-key records early.

Only the calling tenant's keys are considered: the function's session is scoped to its
tenant (on PostgreSQL by the database's row-level security, on SQLite by the ORM guard,
which covers these ORM queries; docs/tenancy.md), and operator keys, which have no
tenant, are never seen. The deletions commit together with the invocation's success, so
a failed attempt deletes nothing and a retry starts from the same keys.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel, Field

from runtime import Context, function
from runtime.store.models import ApiKey


class Input(BaseModel):
    grace_days: int = Field(
        default=7, ge=0, le=3650, description="Keep expired or revoked keys this many days."
    )
    dry_run: bool = Field(default=False, description="List what would be deleted; delete nothing.")


class Output(BaseModel):
    deleted: int
    key_ids: list[str] = Field(description="Public ids of the deleted keys, sorted.")
    cutoff: datetime = Field(description="Keys expired or revoked before this time qualify.")
    dry_run: bool


@function(queue="scheduled", max_retries=3, timeout=120, internal=True)
def cleanup_expired_keys(ctx: Context, payload: Input) -> Output:
    cutoff = datetime.now(UTC) - timedelta(days=payload.grace_days)
    # No tenant filter here on purpose: ctx.session scopes these ORM statements to the
    # tenant on both backends (raw SQL would be scoped on PostgreSQL only; docs/tenancy.md).
    query = (
        sa.select(ApiKey)
        .where(sa.or_(ApiKey.expires_at < cutoff, ApiKey.revoked_at < cutoff))
        .order_by(ApiKey.id)
    )
    keys = list(ctx.session.scalars(query))
    if not payload.dry_run:
        for key in keys:
            ctx.session.delete(key)
        ctx.session.flush()
    key_ids = [key.id for key in keys]
    ctx.log.info("expired_keys_cleaned", count=len(key_ids), dry_run=payload.dry_run)
    return Output(deleted=len(key_ids), key_ids=key_ids, cutoff=cutoff, dry_run=payload.dry_run)
