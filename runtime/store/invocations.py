"""Invocations and attempts: every state change of an invocation is one statement here.

State changes are atomic conditional updates (`UPDATE ... WHERE id = :id AND status IN
(...)`), not read-then-write. On PostgreSQL the UPDATE takes the row lock; a second
worker claiming the same row waits for the first to commit, re-checks the WHERE clause
against the committed row (READ COMMITTED) and updates nothing. So exactly one claimer
wins without SELECT ... FOR UPDATE round trips, and the same statement is correct on
SQLite, where writers are serialised anyway. Only the sweep, which picks *many* rows
that other sweepers may be picking too, uses `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from runtime.errors import (
    IdempotencyConflict,
    InvalidState,
    InvocationNotFound,
    TenantNotFound,
    TenantSuspended,
)
from runtime.store import models, statements
from runtime.store.db import Database, translate_errors
from runtime.store.models import CLAIMABLE, Status
from runtime.store.paging import decode_cursor, encode_cursor
from runtime.store.views import AttemptView, InvocationView

I = models.Invocation  # noqa: E741 - the table every statement here is about
_VIEW_FIELDS = tuple(f.name for f in dataclasses.fields(InvocationView))


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


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A worker won the invocation: run attempt `attempt` under the lease."""

    invocation: InvocationView
    attempt: int


@dataclasses.dataclass(frozen=True)
class NotClaimed:
    """Why a delivery did not become an attempt."""

    #: `missing`, `finished`, `running`, `not_due`, `tenant_suspended`
    reason: str
    due_at: datetime | None = None


@dataclasses.dataclass(frozen=True)
class Dispatch:
    """An invocation to hand to the broker."""

    id: str
    tenant_id: str
    function: str
    queue: str


class Invocations:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- accepting ----------------------------------------------------------------------------

    def insert(self, new: NewInvocation) -> tuple[InvocationView, bool]:
        """Store a new invocation, or return the one stored under the same key.

        Returns the invocation and whether this call created it. Concurrent inserts of one
        key meet at the unique constraint: one wins, the others read the winner.
        """
        now = self.db.clock()
        due = new.scheduled_for is None or new.scheduled_for <= now
        view = InvocationView(
            id=new.id,
            tenant_id=new.tenant_id,
            function=new.function,
            queue=new.queue,
            status=Status.QUEUED if due else Status.SCHEDULED,
            trigger=new.trigger,
            idempotency_key=new.idempotency_key,
            request_hash=new.request_hash,
            request_id=new.request_id,
            parent_id=new.parent_id,
            payload=new.payload,
            result=None,
            error=None,
            attempts=0,
            max_retries=new.max_retries,
            budget_start=0,
            created_at=now,
            scheduled_for=new.scheduled_for,
            started_at=None,
            finished_at=None,
            lease_expires_at=None,
            worker_id=None,
        )
        # A due invocation is sent by the caller right after this commit.
        values = {name: getattr(view, name) for name in _VIEW_FIELDS}
        values["dispatched_at"] = now if due else None
        # One statement, committed by itself: it inserts only for an active tenant, and
        # a duplicate key inserts nothing instead of failing.
        with self.db.statements() as connection:
            inserted = connection.execute(
                statements.insert_for_active_tenant(self.db.dialect), values
            ).first()
        if inserted is not None:
            return view, True
        self._check_tenant(new.tenant_id)
        existing = self.find_by_key(new.tenant_id, new.function, new.idempotency_key)
        if existing is None:  # the winner was deleted (its broker send failed); try again
            return self.insert(new)
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

    def find_by_key(self, tenant_id: str, function: str, key: str) -> InvocationView | None:
        with self.db.autocommit() as s:
            row = s.scalars(
                sa.select(I).where(
                    I.tenant_id == tenant_id, I.function == function, I.idempotency_key == key
                )
            ).one_or_none()
            return None if row is None else InvocationView.from_row(row)

    def withdraw(self, invocation_id: str) -> None:
        """Delete an invocation that was never handed to a broker (the send failed)."""
        with self.db.session() as s:
            s.execute(
                sa.delete(I).where(I.id == invocation_id, I.attempts == 0, I.status.in_(CLAIMABLE))
            )

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
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[InvocationView], str | None]:
        """Newest first, in pages; the cursor is opaque to clients."""
        query = sa.select(I).order_by(I.created_at.desc(), I.id.desc()).limit(limit + 1)
        if function:
            query = query.where(I.function == function)
        if status:
            query = query.where(I.status == status)
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

    def cancel(self, invocation_id: str, tenant_id: str | None) -> InvocationView:
        now = self.db.clock()
        with self.db.session(tenant_id) as s:
            done = s.execute(
                sa.update(I)
                .where(I.id == invocation_id, I.status.in_(CLAIMABLE))
                .values(status=Status.CANCELLED, finished_at=now, lease_expires_at=None)
            )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            current = self.get(invocation_id, tenant_id)
            raise InvalidState(
                f"invocation is {current.status}; only one not yet running can be cancelled"
            )
        return self.get(invocation_id, tenant_id)

    def requeue(self, invocation_id: str, tenant_id: str | None) -> InvocationView:
        """Queue a failed or cancelled invocation again, with a fresh retry budget."""
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
        if done.rowcount == 0:  # type: ignore[attr-defined]
            current = self.get(invocation_id, tenant_id)
            raise InvalidState(
                f"invocation is {current.status}; only a failed or cancelled one can be retried"
            )
        return self.get(invocation_id, tenant_id)

    # --- the worker's side --------------------------------------------------------------------

    def claim(self, invocation_id: str, worker_id: str, lease_s: float) -> Claimed | NotClaimed:
        """Take the invocation for one attempt, or say why not (see the module docstring)."""
        now = self.db.clock()
        params = {
            "_id": invocation_id,
            "_now": now,
            "_lease": now + timedelta(seconds=lease_s),
            "_worker": worker_id,
        }
        if self.db.dialect == "postgresql":
            with self.db.statements() as connection:
                row = connection.execute(statements.CLAIM_WITH_ATTEMPT, params).first()
        else:
            with translate_errors(), self.db.engine.begin() as connection:
                row = connection.execute(statements.CLAIM, params).first()
                if row is not None:
                    connection.execute(
                        statements.ADD_ATTEMPT,
                        {
                            "invocation_id": row.id,
                            "tenant_id": row.tenant_id,
                            "number": row.attempts,
                            "worker_id": worker_id,
                            "started_at": now,
                        },
                    )
        if row is not None:
            # A Core row has the attributes `from_row` reads.
            return Claimed(InvocationView.from_row(row), row.attempts)  # type: ignore[arg-type]
        return self._why_not_claimed(invocation_id, now)

    def _why_not_claimed(self, invocation_id: str, now: datetime) -> NotClaimed:
        with self.db.autocommit() as s:
            row = s.get(I, invocation_id)
        if row is None:
            return NotClaimed("missing")
        if row.status in models.FINISHED:
            return NotClaimed("finished")
        if row.status == Status.RUNNING:
            return NotClaimed("running")
        if row.scheduled_for is not None and row.scheduled_for > now:
            return NotClaimed("not_due", due_at=row.scheduled_for)
        return NotClaimed("tenant_suspended")

    @staticmethod
    def _lease(claimed: Claimed) -> dict[str, Any]:
        """The parameters of `statements.OURS` for this attempt."""
        inv = claimed.invocation
        return {"_id": inv.id, "_attempt": claimed.attempt, "_worker": inv.worker_id}

    def _close_attempt(
        self,
        s: Session | Connection,
        claimed: Claimed,
        outcome: str,
        error: dict[str, Any] | None,
        tb: str | None,
    ) -> None:
        s.execute(
            statements.CLOSE_ATTEMPT,
            {
                "_invocation_id": claimed.invocation.id,
                "_number": claimed.attempt,
                "_now": self.db.clock(),
                "_outcome": outcome,
                "_error": error,
                "_traceback": tb,
            },
        )

    def succeed(
        self, s: Session | Connection, claimed: Claimed, result: dict[str, Any] | None
    ) -> bool:
        """Record success inside the caller's unit of work; False if the lease was lost."""
        params = {**self._lease(claimed), "_now": self.db.clock(), "_result": result}
        if self.db.dialect == "postgresql":
            return s.execute(statements.SUCCEED_AND_CLOSE, params).first() is not None
        done = s.execute(statements.SUCCEED, params)
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return False
        self._close_attempt(s, claimed, "succeeded", None, None)
        return True

    def succeed_alone(self, claimed: Claimed, result: dict[str, Any] | None) -> bool:
        """Record success when the function wrote nothing else: no unit of work to join.

        On PostgreSQL one autocommitted statement; a lost lease changes nothing.
        """
        if self.db.dialect == "postgresql":
            with self.db.statements() as connection:
                return self.succeed(connection, claimed, result)
        with translate_errors(), self.db.engine.begin() as connection:
            return self.succeed(connection, claimed, result)

    def fail(
        self,
        claimed: Claimed,
        *,
        outcome: str,
        error: dict[str, Any],
        traceback: str | None,
        retry_at: datetime | None,
    ) -> str | None:
        """Record a failed attempt; retry at `retry_at`, or fail for good if None.

        Returns the new status, or None if the lease was lost meanwhile.
        """
        now = self.db.clock()
        status = Status.RETRYING if retry_at is not None else Status.FAILED
        with self.db.session() as s:
            done = s.execute(
                sa.update(I)
                .where(statements.OURS)
                .values(
                    status=status,
                    error=error,
                    scheduled_for=retry_at,
                    finished_at=None if retry_at else now,
                    lease_expires_at=None,
                    dispatched_at=None,
                ),
                self._lease(claimed),
                # Nothing of this row is loaded in the session: no objects to update.
                execution_options={"synchronize_session": False},
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                return None
            self._close_attempt(s, claimed, outcome, error, traceback)
        return status

    # --- the dispatcher's sweep ---------------------------------------------------------------

    def reclaim_lost(self, *, limit: int = 500) -> builtins.list[str]:
        """Running invocations whose lease expired: their worker died. Returns their ids.

        The lost attempt counts against the retry budget, so a function that kills its
        worker every time ends `failed` instead of looping.
        """
        now = self.db.clock()
        lost: builtins.list[str] = []
        with self.db.session() as s:
            rows = s.scalars(
                _lock(
                    s,
                    sa.select(I)
                    .where(_status_in(Status.RUNNING), I.lease_expires_at < now)
                    .limit(limit),
                )
            ).all()
            for row in rows:
                error = {"type": "WorkerLost", "message": "the worker stopped during the attempt"}
                s.execute(
                    sa.update(models.Attempt)
                    .where(
                        models.Attempt.invocation_id == row.id,
                        models.Attempt.number == row.attempts,
                    )
                    .values(finished_at=now, outcome="lost", error=error)
                )
                retries_used = row.attempts - row.budget_start
                row.error = error
                row.lease_expires_at = None
                if retries_used > row.max_retries:
                    row.status = Status.FAILED
                    row.finished_at = now
                else:
                    row.status = Status.RETRYING
                    row.scheduled_for = now
                    row.dispatched_at = None
                    lost.append(row.id)
        return lost

    def take_dispatchable(
        self,
        *,
        redispatch_after_s: float,
        waiting_since: Mapping[str, datetime | None] | None = None,
        limit: int = 500,
    ) -> builtins.list[Dispatch]:
        """Mark and return what should go to the broker now.

        Due scheduled and retrying invocations not sent since they came due, and queued
        ones sent long ago but still not claimed (the broker lost them, or never had them).

        `waiting_since` maps a queue to when its oldest waiting message was enqueued (None
        if the queue is empty). The broker's queues are first in, first out, so a queued
        invocation sent after that is still waiting behind the backlog, not lost, and is
        not sent again; a queue not named falls back to `redispatch_after_s` alone.
        """
        now = self.db.clock()
        stale = now - timedelta(seconds=redispatch_after_s)
        due = sa.or_(I.scheduled_for.is_(None), I.scheduled_for <= now)
        never_sent_since_due = sa.or_(I.dispatched_at.is_(None), I.dispatched_at < I.scheduled_for)
        sent_long_ago = self._sent_before(stale, waiting_since or {})
        with self.db.session() as s:
            rows = s.scalars(
                _lock(
                    s,
                    sa.select(I)
                    .where(
                        _status_in(*CLAIMABLE),
                        due,
                        sa.or_(never_sent_since_due, sent_long_ago),
                        I.tenant_id.in_(statements.ACTIVE_TENANT_IDS),
                    )
                    .order_by(I.scheduled_for.nulls_first(), I.created_at)
                    .limit(limit),
                )
            ).all()
            out = []
            for row in rows:
                row.dispatched_at = now
                if row.status == Status.SCHEDULED:
                    row.status = Status.QUEUED
                out.append(Dispatch(row.id, row.tenant_id, row.function, row.queue))
        return out

    @staticmethod
    def _sent_before(stale: datetime, waiting_since: Mapping[str, datetime | None]) -> Any:
        """`dispatched_at` older than `stale` and than its queue's oldest waiting message."""
        backlogged = {q: t for q, t in waiting_since.items() if t is not None and t < stale}
        if not backlogged:
            return I.dispatched_at < stale
        # Clock skew between the processes that stamp the two times only risks a
        # duplicate send (the claim drops it), never a lost one.
        behind_backlog = [
            sa.and_(I.queue == queue, I.dispatched_at < since)
            for queue, since in backlogged.items()
        ]
        return sa.or_(
            sa.and_(I.queue.not_in(list(backlogged)), I.dispatched_at < stale), *behind_backlog
        )

    def counts_by_status(self, tenant_id: str | None = None) -> dict[str, int]:
        with self.db.session(tenant_id) as s:
            rows = s.execute(sa.select(I.status, sa.func.count()).group_by(I.status)).all()
            return {status: count for status, count in rows}


def _status_in(*states: Status) -> Any:
    """`status IN (...)` with the states written into the SQL text, not bound.

    The sweep's index is partial (unfinished states only). PostgreSQL uses a partial index
    only where it can prove the query's WHERE implies the index's, and a prepared
    statement's generic plan sees `$1`, not a state: it would scan the whole table.
    """
    return I.status.in_(
        sa.bindparam("states", [s.value for s in states], expanding=True, literal_execute=True)
    )


def _lock(s: Session, query: Any) -> Any:
    if s.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query
