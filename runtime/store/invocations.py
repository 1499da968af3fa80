"""Invocations as callers see them: accept (with idempotency), read, list, cancel, requeue.

The worker's side (claims and leases) is in `runtime.store.claims`; the dispatcher's
sweep in `runtime.store.sweep`. State changes here are atomic conditional updates
(`UPDATE ... WHERE id = :id AND status IN (...)`), not read-then-write.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from runtime.errors import (
    IdempotencyConflict,
    InvalidState,
    InvocationNotFound,
    TenantNotFound,
    TenantSuspended,
    Unauthenticated,
)
from runtime.store import callbacks, models, statements
from runtime.store.accept_batches import write_accepts
from runtime.store.audit import AuditEntry, append_in
from runtime.store.db import Database, translate_errors
from runtime.store.driver import prepared
from runtime.store.fairness import WaitReason
from runtime.store.group_commit import CommitterClosed
from runtime.store.leader_commit import LeaderCommitter
from runtime.store.models import CLAIMABLE, Status
from runtime.store.paging import decode_cursor, encode_cursor
from runtime.store.views import INVOCATION_FIELDS, AttemptView, InvocationView

I = models.Invocation  # noqa: E741 - the table every statement here is about
_JSON_COLUMNS = tuple(c.key for c in I.__table__.columns if isinstance(c.type, sa.JSON))


@dataclasses.dataclass(frozen=True)
class NewInvocation:
    id: str
    tenant_id: str
    function: str
    queue: str
    trigger: str
    idempotency_key: str
    request_hash: str
    request_id: str | None
    parent_id: str | None
    payload: dict[str, Any]
    max_retries: int
    #: None: due now.
    scheduled_for: datetime | None = None
    #: The value of the function's `concurrency_key` field in the input, if it declares one.
    concurrency_key: str | None = None
    #: Where to POST the finished invocation (`runtime.callbacks`); None: nowhere.
    callback_url: str | None = None


_NEW_FIELDS = tuple(
    f.name for f in dataclasses.fields(NewInvocation) if f.name in INVOCATION_FIELDS
)
#: The fields of a stored invocation that a new one does not have yet.
_NOT_YET: dict[str, Any] = dict.fromkeys(
    ("result", "error", "started_at", "finished_at", "lease_expires_at", "worker_id")
)


def view_of(new: NewInvocation, created_at: datetime, *, held: bool = False) -> InvocationView:
    """The invocation `new` as stored at `created_at`: queued if due by then, else scheduled.

    `held`: a due one is stored waiting for fair dispatch to admit it (`fair_share`).
    """
    due = new.scheduled_for is None or new.scheduled_for <= created_at
    fields = {name: getattr(new, name) for name in _NEW_FIELDS}
    fields.update(_NOT_YET)
    fields["waiting_reason"] = WaitReason.FAIR_SHARE.value if held and due else None
    fields["status"] = Status.QUEUED if due else Status.SCHEDULED
    fields["attempts"] = fields["budget_start"] = 0
    fields["created_at"] = created_at
    return InvocationView.from_fields(fields)


def insert_values(
    view: InvocationView,
    *,
    sent_at: datetime | None,
    window: int | None = None,
    key_id: str | None = None,
) -> dict[str, Any]:
    """The parameters of the INSERT of the new invocation `view` (single or batch).

    A due one is marked sent at `sent_at` (None: held, for fair dispatch to admit): the
    caller sends it right after the commit; should the process stop first, the sweep
    re-sends it after `redispatch_after_s`.
    """
    # Every field of the view is a column: its instance dict holds them all.
    values = dict(vars(view))
    values["dispatched_at"] = sent_at if view.status == Status.QUEUED else None
    if window is not None:
        values["_window"] = window
    if key_id is not None:
        values["_key_id"] = key_id
    return values


class Invocations:
    def __init__(self, db: Database, *, accept_group_commit: bool = False) -> None:
        self.db = db
        #: Concurrent accepts' INSERTs written together (`runtime.store.accept_batches`),
        #: each batch by one of the accepting threads (`runtime.store.leader_commit`).
        self._accepts: LeaderCommitter | None = None
        if accept_group_commit and db.dialect == "postgresql":
            self._accepts = LeaderCommitter(self._write_accepts)

    def close(self) -> None:
        """Refuse accepts to the group commit, if any, once the ones in flight are written."""
        if self._accepts is not None:
            self._accepts.close()

    # --- accepting ----------------------------------------------------------------------------

    def _write_new(
        self,
        new: NewInvocation,
        values: dict[str, Any],
        admit: bool,
        key_checked: bool,
        now: datetime,
    ) -> dict[str, Any] | None:
        """The INSERT of `insert`; its RETURNING as a dict, or None if it inserted nothing.

        One statement, committed by itself: it inserts only for an active tenant (and an
        active key), and a duplicate key inserts nothing instead of failing. A callback is
        written in the same transaction: an invocation is never stored without the
        callback it asked for.
        """
        if new.callback_url is None and self._accepts is not None:
            with contextlib.suppress(CommitterClosed):  # closed: the single statement below
                inserted: dict[str, Any] | None = self._accepts.submit(values)
                return inserted
        if new.callback_url is None and self.db.dialect == "postgresql":
            return self._insert_one(values)
        insert = statements.insert_for_active_tenant(self.db.dialect, admit, key_checked)
        if new.callback_url is None:
            with self.db.statements() as connection:
                row = connection.execute(insert, values).first()
        else:
            with translate_errors(), self.db.engine.begin() as connection:
                row = connection.execute(insert, values).first()
                if row is not None:
                    callbacks.insert_in(connection, new.id, new.tenant_id, new.callback_url, now)
        return None if row is None else dict(row._mapping)

    def _insert_one(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """One accept's INSERT on PostgreSQL, run by psycopg (`runtime.store.driver`)."""
        insert = statements.insert_for_active_tenant(
            self.db.dialect, admit="_window" in values, key_checked="_key_id" in values
        )
        with self.db.driver_connection() as driver:
            return prepared(insert, self.db.engine, json=_JSON_COLUMNS).first(driver, values)

    def _write_accepts(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """A batch of accepts' INSERTs (`LeaderCommitter`'s writer).

        A batch of one, what a lone accept makes, goes by the single INSERT, which takes
        less time than the batch statement, whose rows travel as one JSON document
        (in-process p50 0.74-0.95 against 1.04-1.23 ms; docs/perf/README.md).
        """
        if len(rows) == 1:
            return [self._insert_one(rows[0])]
        return write_accepts(self.db, rows)

    def insert(
        self, new: NewInvocation, *, window: int | None = None, key_id: str | None = None
    ) -> tuple[InvocationView, bool]:
        """Store a new invocation, or return the one stored under the same key.

        Returns the invocation and whether this call created it. Concurrent inserts of one
        key meet at the unique constraint: one wins, the others read the winner.

        `window` (fair dispatch, docs/fairness.md): a due invocation is stored as sent only
        while fewer than `window` of its tenant's are sent and not started, else held; a
        held one comes back with `waiting_reason` `fair_share` (the caller does not send
        it). None: stored as sent whenever due.

        `key_id`: store it only while that API key is active (neither revoked nor
        expired), checked by the INSERT itself; otherwise `Unauthenticated`.
        """
        now = self.db.clock()
        view = view_of(new, now)
        due = view.status == Status.QUEUED
        values = insert_values(view, sent_at=now, window=window, key_id=key_id)
        inserted = self._write_new(new, values, window is not None, key_id is not None, now)
        if inserted is not None:
            if window is not None and due and inserted["dispatched_at"] is None:
                view = view.evolve(waiting_reason=WaitReason.FAIR_SHARE.value)
            return view, True
        self._check_tenant(new.tenant_id)
        if key_id is not None:
            self._check_key(key_id)
        existing = self.find_by_key(new.tenant_id, new.function, new.idempotency_key)
        if existing is None:  # the holder of the key was removed meanwhile; try again
            return self.insert(new, window=window, key_id=key_id)
        if existing.request_hash != new.request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different body for this function"
            )
        return existing, False

    def _check_tenant(self, tenant_id: str) -> None:
        with self.db.autocommit() as s:
            status = s.scalar(sa.select(models.Tenant.status).where(models.Tenant.id == tenant_id))
        if status is None:
            raise TenantNotFound(f"no tenant {tenant_id!r}")
        if status != models.TenantStatus.ACTIVE:
            raise TenantSuspended(f"tenant {tenant_id!r} is suspended")

    def _check_key(self, key_id: str) -> None:
        now = self.db.clock()
        with self.db.autocommit() as s:
            key = s.get(models.ApiKey, key_id)
        if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
            raise Unauthenticated("the API key is unknown, revoked or expired")

    def find_by_key(self, tenant_id: str, function: str, key: str) -> InvocationView | None:
        with self.db.autocommit() as s:
            row = s.scalars(
                sa.select(I).where(
                    I.tenant_id == tenant_id, I.function == function, I.idempotency_key == key
                )
            ).one_or_none()
            return None if row is None else InvocationView.from_row(row)

    def mark_unsent(self, invocation_id: str) -> None:
        """Clear `dispatched_at` of a queued invocation whose send failed: the sweep sends it."""
        with self.db.statements() as connection:
            connection.execute(
                sa.update(I)
                .where(I.id == invocation_id, I.status == Status.QUEUED)
                .values(dispatched_at=None)
            )

    # --- reading ------------------------------------------------------------------------------

    def get(self, invocation_id: str, tenant_id: str | None = None) -> InvocationView:
        """One invocation; another tenant's is reported exactly like a missing one."""
        with self.db.session(tenant_id) as s:
            row = s.scalars(sa.select(I).where(I.id == invocation_id)).one_or_none()
            if row is None:
                raise InvocationNotFound(f"no invocation {invocation_id!r}")
            return InvocationView.from_row(row)

    def attempts(self, invocation_id: str) -> list[AttemptView]:
        with self.db.session() as s:
            rows = s.scalars(
                sa.select(models.Attempt)
                .where(models.Attempt.invocation_id == invocation_id)
                .order_by(models.Attempt.number)
            )
            return [AttemptView.from_row(r) for r in rows]

    def list(
        self,
        tenant_id: str | None,
        *,
        function: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[InvocationView], str | None]:
        """Newest first, in pages; the cursor is opaque to clients.

        `created_from` and `created_to` bound the creation time (from inclusive, to
        exclusive). With `tenant_id`, only that tenant's invocations; None: every tenant's.
        """
        query = sa.select(I).order_by(I.created_at.desc(), I.id.desc()).limit(limit + 1)
        if tenant_id is not None:
            query = query.where(I.tenant_id == tenant_id)
        if function:
            query = query.where(I.function == function)
        if status:
            query = query.where(I.status == status)
        if created_from is not None:
            query = query.where(I.created_at >= created_from)
        if created_to is not None:
            query = query.where(I.created_at < created_to)
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    I.created_at < created_at, sa.and_(I.created_at == created_at, I.id < last_id)
                )
            )
        with self.db.session(tenant_id) as s:
            rows = list(s.scalars(query))
        views = [InvocationView.from_row(r) for r in rows[:limit]]
        next_cursor = (
            encode_cursor(views[-1].created_at, views[-1].id) if len(rows) > limit else None
        )
        return views, next_cursor

    # --- operator actions ---------------------------------------------------------------------

    def cancel(
        self, invocation_id: str, tenant_id: str | None, *, audit: AuditEntry | None = None
    ) -> InvocationView:
        """Cancel one not yet running; `audit` is appended in the same transaction."""
        now = self.db.clock()
        with self.db.session(tenant_id) as s:
            done = s.execute(
                sa.update(I)
                .where(I.id == invocation_id, I.status.in_(CLAIMABLE))
                .values(status=Status.CANCELLED, finished_at=now, lease_expires_at=None)
            )
            if done.rowcount and audit is not None:  # type: ignore[attr-defined]
                append_in(s, audit, now)
        if done.rowcount == 0:  # type: ignore[attr-defined]
            current = self.get(invocation_id, tenant_id)
            raise InvalidState(
                f"invocation is {current.status}; only one not yet running can be cancelled"
            )
        return self.get(invocation_id, tenant_id)

    def requeue(
        self, invocation_id: str, tenant_id: str | None, *, audit: AuditEntry | None = None
    ) -> InvocationView:
        """Queue a failed or cancelled invocation again, with a fresh retry budget.

        `audit` is appended in the same transaction, if it queued it.
        """
        now = self.db.clock()
        with self.db.session(tenant_id) as s:
            done = s.execute(
                sa.update(I)
                .where(I.id == invocation_id, I.status.in_((Status.FAILED, Status.CANCELLED)))
                .values(
                    status=Status.QUEUED,
                    budget_start=I.attempts,
                    error=None,
                    result=None,
                    finished_at=None,
                    scheduled_for=None,
                    dispatched_at=now,
                )
            )
            if done.rowcount and audit is not None:  # type: ignore[attr-defined]
                append_in(s, audit, now)
        if done.rowcount == 0:  # type: ignore[attr-defined]
            current = self.get(invocation_id, tenant_id)
            raise InvalidState(
                f"invocation is {current.status}; only a failed or cancelled one can be retried"
            )
        return self.get(invocation_id, tenant_id)

    def counts_by_status(self, tenant_id: str | None = None) -> dict[str, int]:
        with self.db.session(tenant_id) as s:
            rows = s.execute(sa.select(I.status, sa.func.count()).group_by(I.status)).all()
            return {status: count for status, count in rows}
