"""The audit trail's SQL: append a record, list records newest first. Nothing else.

A record is appended in the same transaction as the change it records wherever the
change is one unit of work in the store: the store method that makes the change takes an
`AuditEntry` and calls `append_in(session, entry, at)` inside its session once the change
is made, so a change is never committed without its record and a refused change leaves
none. `AuditLog.append` commits a record by itself, for a change that is not one
transaction (a schedule's trigger makes invocations one by one).

There is no update and no delete here: the only statement that removes records is
retention's (`runtime.store.retention.Retention.remove_audit`).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from runtime.store import access_models
from runtime.store.db import Database
from runtime.store.paging import decode_cursor, encode_cursor

A = access_models.AuditRecord


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """A record to append: who acted, for which tenant, what, on what, under which request."""

    #: `key`, `operator`, `cli` or `system` (see `runtime.services.audit.Actor`).
    actor_kind: str
    #: An API key's id, or the OS user of a command.
    actor_id: str
    request_id: str
    #: `noun.verb`, like `invocation.cancel`.
    action: str
    #: None for an action of no tenant (an operator's, across tenants).
    tenant_id: str | None
    #: What it acted on; a store method may fill it in (a new key's id).
    target: str
    detail: dict[str, Any] | None = None

    def evolve(self, **changes: Any) -> AuditEntry:
        """This entry with some fields changed (the store fills in what only it knows)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class AuditRecordView:
    """A stored audit record."""

    id: str
    at: datetime
    tenant_id: str | None
    actor_kind: str
    actor_id: str
    action: str
    target: str
    request_id: str
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: access_models.AuditRecord) -> AuditRecordView:
        return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class AuditFilter:
    """Which records a listing shows; None matches anything."""

    action: str | None = None
    target: str | None = None
    actor_id: str | None = None
    #: From (inclusive) and until (exclusive).
    since: datetime | None = None
    until: datetime | None = None


def append_in(session: Session, entry: AuditEntry, at: datetime) -> None:
    """Add `entry` to the unit of work of `session`: it commits (or not) with the change."""
    session.add(
        A(
            id=str(uuid.uuid4()),
            at=at,
            tenant_id=entry.tenant_id,
            actor_kind=entry.actor_kind,
            actor_id=entry.actor_id,
            action=entry.action,
            target=entry.target,
            request_id=entry.request_id,
            detail=entry.detail,
        )
    )


class AuditLog:
    """Append records and list them; the trail's only reader and (with retention) writer."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, entry: AuditEntry) -> None:
        """Commit one record by itself (for a change that is not one transaction)."""
        with self.db.session() as s:
            append_in(s, entry, self.db.clock())

    def list(
        self,
        tenant_id: str | None,
        where: AuditFilter,
        *,
        limit: int,
        cursor: str | None = None,
    ) -> tuple[list[AuditRecordView], str | None]:
        """Newest first, in pages; with `tenant_id`, only that tenant's records."""
        query = sa.select(A).order_by(A.at.desc(), A.id.desc()).limit(limit + 1)
        if tenant_id is not None:
            query = query.where(A.tenant_id == tenant_id)
        for column, value in (
            (A.action, where.action),
            (A.target, where.target),
            (A.actor_id, where.actor_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if where.since is not None:
            query = query.where(A.at >= where.since)
        if where.until is not None:
            query = query.where(A.at < where.until)
        if cursor:
            at, last_id = decode_cursor(cursor)
            query = query.where(sa.or_(A.at < at, sa.and_(A.at == at, A.id < last_id)))
        with self.db.autocommit() as s:
            rows = list(s.scalars(query))
        views = [AuditRecordView.from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(views[-1].at, views[-1].id) if len(rows) > limit else None
        return views, next_cursor
