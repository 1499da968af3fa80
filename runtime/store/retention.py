"""Retention: remove finished invocations, with their attempts, once they are old enough.

How long a finished invocation is kept depends on its final status (`RetentionPolicy`,
from `FERRY_RETENTION_*_S`) and may be overridden per tenant (`TenantRetention`, columns
of `tenants`); 0 keeps it forever. Each batch is one statement, committed by itself:

    DELETE FROM invocations WHERE id IN (
        SELECT id FROM invocations
        WHERE tenant_id IN (...) AND status = 'succeeded' AND <finished>
          AND finished_at < :before
        LIMIT :n FOR UPDATE SKIP LOCKED)          -- the lock on PostgreSQL only

It walks the partial index `ix_invocations_finished` (tenant, status, finish time), so a
batch reads only rows it removes, and it holds its row locks for one statement: the
accept and claim paths never wait for it, and sweepers of other processes skip what it
holds. Attempts and schedule runs go with their invocation (`ON DELETE CASCADE`; SQLite's
`foreign_keys` pragma is on), and so does the idempotency key, whose unique constraint
is on the invocation's row: the key is free again.

Only finished states are named, so unfinished work is never touched. A finished
invocation retried by hand is `queued` again and out of reach; one being requeued right
now is locked by the requeue and skipped (on PostgreSQL the row is re-checked after the
lock, and SQLite has one writer). A child invocation is not removed with its parent: it
has its own status and is removed when its own retention ends, so its `parent_id` may
name an invocation that no longer exists.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from runtime.settings import Settings
from runtime.store import access_models, models
from runtime.store.db import Database
from runtime.store.models import FINISHED, FINISHED_SQL, Status

_T: sa.Table = models.Invocation.__table__  # type: ignore[assignment]
_TENANTS: sa.Table = models.Tenant.__table__  # type: ignore[assignment]
_AUDIT: sa.Table = access_models.AuditRecord.__table__  # type: ignore[assignment]
#: The longest retention a tenant may set (the column is a 32-bit integer): about 68 years.
MAX_RETENTION_S = 2**31 - 1
#: The tenant columns of each final status's retention.
COLUMNS = {
    Status.SUCCEEDED: "retention_succeeded_s",
    Status.FAILED: "retention_failed_s",
    Status.CANCELLED: "retention_cancelled_s",
}


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """Seconds a finished invocation is kept after it finished, per final status; 0: forever."""

    succeeded_s: int
    failed_s: int
    cancelled_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            succeeded_s=settings.retention_succeeded_s,
            failed_s=settings.retention_failed_s,
            cancelled_s=settings.retention_cancelled_s,
        )

    def seconds(self, status: str) -> int:
        """How long an invocation that ended in `status` is kept."""
        value: int = getattr(self, f"{Status(status).value}_s")
        return value

    def for_tenant(self, tenant: TenantRetention) -> RetentionPolicy:
        """This policy with the tenant's own values where it has them."""
        return RetentionPolicy(
            *(
                own if own is not None else default
                for own, default in (
                    (tenant.succeeded_s, self.succeeded_s),
                    (tenant.failed_s, self.failed_s),
                    (tenant.cancelled_s, self.cancelled_s),
                )
            )
        )


@dataclasses.dataclass(frozen=True)
class TenantRetention:
    """A tenant's own retention per final status, in seconds; None follows the default."""

    tenant_id: str
    succeeded_s: int | None = None
    failed_s: int | None = None
    cancelled_s: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> TenantRetention:
        return cls(
            tenant_id=row.id,
            succeeded_s=row.retention_succeeded_s,
            failed_s=row.retention_failed_s,
            cancelled_s=row.retention_cancelled_s,
        )


@dataclasses.dataclass(frozen=True)
class Expiry:
    """Invocations of `tenant_ids` that ended in `status` before `finished_before` expired."""

    status: Status
    finished_before: datetime
    tenant_ids: tuple[str, ...]


def expiries(
    policy: RetentionPolicy, tenants: Iterable[TenantRetention], now: datetime
) -> list[Expiry]:
    """What has expired at `now`: one `Expiry` per final status and distinct retention.

    Tenants that keep a status for the same time share one statement, so the usual case
    (no overrides) is three statements however many tenants there are.
    """
    groups: dict[tuple[Status, int], list[str]] = {}
    for tenant in tenants:
        own = policy.for_tenant(tenant)
        for status in FINISHED:
            keep_s = own.seconds(status)
            if keep_s > 0:
                groups.setdefault((status, keep_s), []).append(tenant.tenant_id)
    return [
        Expiry(status, now - timedelta(seconds=keep_s), tuple(ids))
        for (status, keep_s), ids in sorted(groups.items())
    ]


@functools.cache
def removal_statement(dialect: str, status: Status) -> Any:
    """The batch delete of one final status (see the module docstring); built once."""
    expired = (
        sa.select(_T.c.id)
        .where(
            _T.c.tenant_id.in_(sa.bindparam("tenant_ids", expanding=True)),
            # Written into the SQL, not bound: the index is partial, and SQLite uses it only
            # when the query repeats its predicate word for word.
            _T.c.status == sa.literal_column(f"'{status.value}'"),
            sa.text(FINISHED_SQL),
            _T.c.finished_at < sa.bindparam("before", type_=_T.c.finished_at.type),
        )
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
    if dialect == "postgresql":
        expired = expired.with_for_update(skip_locked=True)
    return sa.delete(_T).where(_T.c.id.in_(expired.scalar_subquery()))


class Retention:
    """The statements of retention: the tenants' overrides, and removing one batch."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def tenants(self) -> list[TenantRetention]:
        """Every tenant with its own retention (None where it follows the default), by id."""
        with self.db.statements() as connection:
            rows = connection.execute(sa.select(_TENANTS).order_by(_TENANTS.c.id)).all()
        return [TenantRetention.from_row(row) for row in rows]

    def remove(self, expiry: Expiry, *, limit: int) -> int:
        """Remove up to `limit` expired invocations (and their attempts); how many it removed."""
        if not expiry.tenant_ids:
            return 0
        statement = removal_statement(self.db.dialect, expiry.status)
        params = {
            "tenant_ids": list(expiry.tenant_ids),
            "before": expiry.finished_before,
            "limit": limit,
        }
        with self.db.statements() as connection:
            removed: int = connection.execute(statement, params).rowcount
        return removed

    def remove_audit(self, before: datetime, *, limit: int) -> int:
        """Remove up to `limit` audit records older than `before`, oldest first; how many.

        The only statement that removes audit records (a test holds it to that): records
        are kept, unchanged, until `FERRY_RETENTION_AUDIT_S` has passed.
        """
        expired = sa.select(_AUDIT.c.id).where(_AUDIT.c.at < before).order_by(_AUDIT.c.at)
        expired = expired.limit(limit)
        if self.db.dialect == "postgresql":
            expired = expired.with_for_update(skip_locked=True)
        statement = sa.delete(_AUDIT).where(_AUDIT.c.id.in_(expired.scalar_subquery()))
        with self.db.statements() as connection:
            removed: int = connection.execute(statement).rowcount
        return removed
