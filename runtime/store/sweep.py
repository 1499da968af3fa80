"""The dispatcher's sweep: recover attempts whose worker died, and pick what to send.

The sweep picks *many* rows that sweepers of other processes may be picking too, so
unlike the single-row claims it locks with `FOR UPDATE SKIP LOCKED` on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from runtime.store import models, statements
from runtime.store.db import Database
from runtime.store.models import CLAIMABLE, Status

I = models.Invocation  # noqa: E741 - the table every statement here is about


@dataclasses.dataclass(frozen=True)
class Dispatch:
    """An invocation to hand to the broker."""

    id: str
    tenant_id: str
    function: str
    queue: str


@dataclasses.dataclass(frozen=True)
class FairWindows:
    """Each tenant's send window (docs/fairness.md): `base` times its weight, and no more
    than its concurrency limit. A tenant without its own takes the defaults (0: unlimited)."""

    base: int
    default_weight: int = 1
    default_concurrency: int = 0

    def of_tenant(self) -> Any:
        """The window of the tenant of `models.Tenant`'s row, as SQL."""
        T = models.Tenant
        window = self.base * sa.func.coalesce(T.weight, self.default_weight)
        concurrency = sa.func.coalesce(T.concurrency, self.default_concurrency)
        return sa.case((sa.and_(concurrency > 0, concurrency < window), concurrency), else_=window)


class Sweep:
    """The statements of the periodic sweep (`Dispatcher.sweep`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def reclaim_lost(self, *, limit: int = 500) -> list[str]:
        """Running invocations whose lease expired: their worker died. Returns their ids.

        The lost attempt counts against the retry budget, so a function that kills its
        worker every time ends `failed` instead of looping.
        """
        now = self.db.clock()
        lost: list[str] = []
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
        fair: FairWindows | None = None,
    ) -> list[Dispatch]:
        """Mark and return what should go to the broker now.

        Due scheduled and retrying invocations not sent since they came due, and queued
        ones sent long ago but still not claimed (the broker lost them, or never had them).

        `waiting_since` maps a queue to when its oldest waiting message was enqueued (None
        if the queue is empty). The broker's queues are first in, first out, so a queued
        invocation sent after that is still waiting behind the backlog, not lost, and is
        not sent again; a queue not named falls back to `redispatch_after_s` alone.

        With `fair` (fair dispatch, docs/fairness.md) what was never sent is released
        round-robin across tenants, each only up to its window of sent and not yet
        started; without it, everything due goes, oldest first.
        """
        now = self.db.clock()
        stale = now - timedelta(seconds=redispatch_after_s)
        due = sa.or_(I.scheduled_for.is_(None), I.scheduled_for <= now)
        never_sent_since_due = sa.or_(I.dispatched_at.is_(None), I.dispatched_at < I.scheduled_for)
        sent_since_due = sa.and_(
            I.dispatched_at.is_not(None),
            sa.or_(I.scheduled_for.is_(None), I.dispatched_at >= I.scheduled_for),
        )
        sent_long_ago = _sent_before(stale, waiting_since or {})
        waiting = [_status_in(*CLAIMABLE), due, I.tenant_id.in_(statements.ACTIVE_TENANT_IDS)]
        if fair is None:
            wanted = sa.or_(never_sent_since_due, sent_long_ago)
        else:
            wanted = sa.and_(sent_since_due, sent_long_ago)
        with self.db.session() as s:
            rows = list(
                s.scalars(
                    _lock(
                        s,
                        sa.select(I)
                        .where(*waiting, wanted)
                        .order_by(I.scheduled_for.nulls_first(), I.created_at)
                        .limit(limit),
                    )
                ).all()
            )
            if fair is not None and len(rows) < limit:
                turns = s.scalars(
                    _round_robin(
                        waiting,
                        never_sent_since_due,
                        sent_since_due,
                        fair,
                        limit - len(rows),
                    )
                ).all()
                order = {invocation_id: n for n, invocation_id in enumerate(turns)}
                # Re-checked under the lock: another sweeper may have sent some meanwhile.
                locked = s.scalars(
                    _lock(s, sa.select(I).where(I.id.in_(turns), *waiting, never_sent_since_due))
                ).all()
                rows += sorted(locked, key=lambda row: order[row.id])
            out = []
            for row in rows:
                row.dispatched_at = now
                row.waiting_reason = None
                if row.status == Status.SCHEDULED:
                    row.status = Status.QUEUED
                out.append(Dispatch(row.id, row.tenant_id, row.function, row.queue))
        return out


def _round_robin(waiting: list[Any], held: Any, sent: Any, windows: FairWindows, limit: int) -> Any:
    """Ids of held invocations to release, taken rank by rank across tenants.

    Each tenant's held invocations are ranked oldest first; a tenant gets at most its
    free window (its window minus its sent ones). Ordering by rank takes every tenant's
    first before anyone's second: round-robin.
    """
    ranked = (
        sa.select(
            I.id,
            I.tenant_id,
            I.created_at,
            sa.func.row_number()
            .over(
                partition_by=I.tenant_id,
                order_by=(I.scheduled_for.nulls_first(), I.created_at),
            )
            .label("rank"),
        )
        .where(*waiting, held)
        .subquery("ranked")
    )
    sent_by_tenant = (
        sa.select(I.tenant_id, sa.func.count().label("n"))
        .where(_status_in(*CLAIMABLE), sent)
        .group_by(I.tenant_id)
        .subquery("sent")
    )
    return (
        sa.select(ranked.c.id)
        .join(models.Tenant, models.Tenant.id == ranked.c.tenant_id)
        .outerjoin(sent_by_tenant, sent_by_tenant.c.tenant_id == ranked.c.tenant_id)
        .where(ranked.c.rank <= windows.of_tenant() - sa.func.coalesce(sent_by_tenant.c.n, 0))
        .order_by(ranked.c.rank, ranked.c.created_at)
        .limit(limit)
    )


def _sent_before(stale: datetime, waiting_since: Mapping[str, datetime | None]) -> Any:
    """`dispatched_at` older than `stale` and than its queue's oldest waiting message."""
    backlogged = {q: t for q, t in waiting_since.items() if t is not None and t < stale}
    if not backlogged:
        return I.dispatched_at < stale
    # Clock skew between the processes that stamp the two times only risks a
    # duplicate send (the claim drops it), never a lost one.
    behind_backlog = [
        sa.and_(I.queue == queue, I.dispatched_at < since) for queue, since in backlogged.items()
    ]
    return sa.or_(
        sa.and_(I.queue.not_in(list(backlogged)), I.dispatched_at < stale), *behind_backlog
    )


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
