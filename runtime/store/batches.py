"""A batch of new invocations of one tenant: stored together, admitted together.

`insert_many` stores every new row of a batch in one transaction: one check that the
tenant is active (on PostgreSQL a `FOR SHARE` lock, so it cannot be suspended midway),
one multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id` (SQLAlchemy's
"insertmanyvalues": one statement per page of rows, 1,000 rows a page), the callback
rows of the created ones, and one `SELECT` of the rows already stored under the keys
that conflicted. One commit; any error rolls all of it back, so a batch is stored
whole or not at all.

`admit_many` is fair dispatch's `admit` for many rows of one tenant: one `UPDATE` marks
sent the oldest of them its window has room for. The rows were stored held, saying why
(`fair_share`), so the rest are not written again: a batch of 1,000 with a window of 64
updates at most 64 rows, not 1,000 (every update of a row is a new version of it, with
an entry in each of its indexes).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from runtime.errors import StoreUnavailable, TenantNotFound, TenantSuspended
from runtime.store import callbacks, models
from runtime.store.db import Database, translate_errors
from runtime.store.driver import json_text
from runtime.store.fairness import sent_count
from runtime.store.invocations import NewInvocation, insert_values, view_of
from runtime.store.models import Status
from runtime.store.statements import invocation_record, recordset_column, recordset_row
from runtime.store.views import InvocationView

_T: sa.Table = models.Invocation.__table__  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class StoredBatch:
    """What `insert_many` did: the views it created, and those found under taken keys."""

    #: The rows this call stored, by id.
    created: dict[str, InvocationView]
    #: The rows stored earlier under a key of the batch, by idempotency key.
    existing: dict[str, InvocationView]


class Batches:
    """The statements of the batch invoke API (`runtime.services.batches`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert_many(self, rows: Sequence[NewInvocation], *, held: bool = False) -> StoredBatch:
        """Store the rows whose key is free; read those whose key is taken. One commit.

        Every row is of one tenant and one function, with distinct keys. Rows are stored
        1 microsecond apart, in order, so the batch keeps its order wherever invocations
        are ordered by creation (fair dispatch's releases). `held` as for
        `Invocations.insert`: due rows are stored unsent and held (`fair_share`) until
        `admit_many` sends those the window has room for.
        """
        if not rows:
            return StoredBatch({}, {})
        tenant_id, function = rows[0].tenant_id, rows[0].function
        if any(r.tenant_id != tenant_id or r.function != function for r in rows):
            raise ValueError("a batch is of one tenant and one function")
        now = self.db.clock()
        views = [
            view_of(row, now + timedelta(microseconds=i), held=held) for i, row in enumerate(rows)
        ]
        sent_at = None if held else now
        values = [insert_values(view, sent_at=sent_at) for view in views]
        with translate_errors(), self.db.engine.begin() as connection:
            _lock_active_tenant(connection, tenant_id, self.db.dialect)
            created_ids = _insert(connection, values)
            missing = [v for v in views if v.id not in created_ids]
            existing = _by_keys(
                connection, tenant_id, function, [v.idempotency_key for v in missing]
            )
            vanished = [v for v in missing if v.idempotency_key not in existing]
            if vanished:
                # Their holders were removed between the insert and the read: store them now.
                again = [values[views.index(v)] for v in vanished]
                created_ids |= _insert(connection, again)
                if any(v.id not in created_ids for v in vanished):
                    raise StoreUnavailable("the batch met concurrent changes; send it again")
            for row, view in zip(rows, views, strict=True):
                if view.id in created_ids and row.callback_url is not None:
                    callbacks.insert_in(
                        connection, view.id, tenant_id, row.callback_url, view.created_at
                    )
        return StoredBatch({v.id: v for v in views if v.id in created_ids}, existing)

    def find_by_keys(
        self, tenant_id: str, function: str, keys: Collection[str]
    ) -> dict[str, InvocationView]:
        """The tenant's invocations of `function` stored under any of `keys`, by key."""
        if not keys:
            return {}
        with translate_errors(), self.db.engine.connect() as connection:
            return _by_keys(connection, tenant_id, function, list(keys))

    def admit_many(self, tenant_id: str, invocation_ids: Collection[str], window: int) -> list[str]:
        """Mark sent the oldest of these held rows the tenant's window has room for.

        The others stay held as `insert_many` stored them (`fair_share`) for a release to
        send. Returns the ids marked sent, oldest first. One statement, which writes only
        the rows it sends.
        """
        if not invocation_ids:
            return []
        now = self.db.clock()
        ids = list(invocation_ids)
        admit = _admit_statement(self.db.dialect)
        params = {"_ids": ids, "_tenant": tenant_id, "_window": window, "_now": now}
        with self.db.statements() as connection:
            rows = connection.execute(admit, params).all()
        return [r.id for r in sorted(rows, key=lambda r: r.created_at)]

    def mark_unsent(self, invocation_ids: Collection[str]) -> None:
        """`Invocations.mark_unsent` for many: the sweep sends them. One statement."""
        if not invocation_ids:
            return
        with self.db.statements() as connection:
            connection.execute(
                sa.update(_T)
                .where(_T.c.id.in_(list(invocation_ids)), _T.c.status == Status.QUEUED)
                .values(dispatched_at=None)
            )


@functools.cache
def _admit_statement(dialect: str) -> Any:
    """`admit_many`'s UPDATE, built once per dialect: building it cost more than running it."""
    ids_param = (
        sa.any_(sa.bindparam("_ids", type_=postgresql.ARRAY(sa.String())))
        if dialect == "postgresql"
        else None
    )

    def among(column: Any) -> Any:
        if ids_param is not None:
            return column == ids_param
        return column.in_(sa.bindparam("_ids", expanding=True))

    free = sa.bindparam("_window") - sent_count(sa.bindparam("_tenant"), sa.bindparam("_window"))
    # LIMIT must not go negative: PostgreSQL refuses it, SQLite reads it as "no limit".
    room = sa.case((free > 0, free), else_=0)
    new = sa.alias(_T, "new")
    pick = (
        sa.select(new.c.id)
        .where(among(new.c.id), *_held(new))
        .order_by(new.c.created_at, new.c.id)
        .limit(room)
    )
    return (
        sa.update(_T)
        # Re-checked on the row: a sweep may have sent it since the pick's snapshot.
        .where(_T.c.id.in_(pick), *_held(_T))
        .values(
            dispatched_at=sa.bindparam("_now", type_=_T.c.dispatched_at.type),
            waiting_reason=None,
        )
        .returning(_T.c.id, _T.c.created_at)
    )


def _held(table: Any) -> tuple[Any, Any]:
    """Queued and not sent: a row admission may send."""
    return table.c.status == Status.QUEUED, table.c.dispatched_at.is_(None)


#: SQLite: SQLAlchemy's "insertmanyvalues" (multi-row VALUES, 1,000 rows a statement).
_SQLITE_INSERT = sqlite.insert(_T).on_conflict_do_nothing().returning(_T.c.id)


def _insert(connection: sa.Connection, values: list[dict[str, Any]]) -> set[str]:
    """Insert the rows whose key is free; the ids inserted. One statement on PostgreSQL."""
    if connection.dialect.name != "postgresql":
        return {row.id for row in connection.execute(_SQLITE_INSERT, values)}
    # The rows as one JSON document, read back into rows by PostgreSQL: the statement and
    # its parameters are the same whatever the batch's size, and orjson writes the
    # document in C (one array per column cost psycopg a regular expression per value,
    # a third of the gateway's CPU per item).
    insert = _pg_recordset_insert()
    document = json_text([recordset_row(row) for row in values])
    return {row.id for row in connection.exec_driver_sql(insert, {"rows": document})}


@functools.cache
def _pg_recordset_insert() -> str:
    """`INSERT ... SELECT ... FROM json_to_recordset(%(rows)s::json) ON CONFLICT DO NOTHING`."""
    names = ", ".join(f'"{c.name}"' for c in _T.columns)
    selected = ", ".join(recordset_column("batch", c.name) for c in _T.columns)
    return (
        f'INSERT INTO "{_T.name}" ({names}) SELECT {selected} '
        f"FROM json_to_recordset(%(rows)s::json) AS batch({invocation_record()}) "
        'ON CONFLICT DO NOTHING RETURNING "id"'
    )


def _lock_active_tenant(connection: sa.Connection, tenant_id: str, dialect: str) -> None:
    """Refuse a missing or suspended tenant; on PostgreSQL hold it active until the commit."""
    tenants: sa.Table = models.Tenant.__table__  # type: ignore[assignment]
    query = sa.select(tenants.c.status).where(tenants.c.id == tenant_id)
    if dialect == "postgresql":
        query = query.with_for_update(read=True)
    status = connection.execute(query).scalar()
    if status is None:
        raise TenantNotFound(f"no tenant {tenant_id!r}")
    if status != models.TenantStatus.ACTIVE:
        raise TenantSuspended(f"tenant {tenant_id!r} is suspended")


def _by_keys(
    connection: sa.Connection, tenant_id: str, function: str, keys: list[str]
) -> dict[str, InvocationView]:
    if not keys:
        return {}
    rows = connection.execute(
        sa.select(_T).where(
            _T.c.tenant_id == tenant_id,
            _T.c.function == function,
            _T.c.idempotency_key.in_(keys),
        )
    )
    return {row.idempotency_key: InvocationView.from_mapping(row._mapping) for row in rows}
