"""Figures over time for the dashboard's charts: per time bucket, in SQL on both backends.

A window `[start, end)` is cut into equal buckets. Which bucket a row falls in is a
`CASE` over the bucket edges (bound parameters), so the grouping is plain SQL that SQLite
and PostgreSQL run alike, with no date arithmetic of either dialect. Every read takes
`tenant_id`: a tenant id limits it to that tenant's rows (the tenant-scoped session
enforces it, and the queries say it too); None reads across tenants.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from runtime.quantiles import percentile
from runtime.store.db import Database
from runtime.store.models import Status
from runtime.store.stats import FINAL_STATUSES, PERCENTILE_SAMPLE, TIMED_OUTCOMES, A, I


@dataclasses.dataclass(frozen=True)
class Bucket:
    """What happened in `[start, end)`, and what was waiting at its end."""

    start: datetime
    end: datetime
    #: Invocations that finished in the bucket, by final status.
    succeeded: int = 0
    failed: int = 0
    #: The 95th percentile of the run times of attempts that ended in the bucket.
    p95_ms: float | None = None
    samples: int = 0
    #: Invocations accepted and due but not yet started at `end` (the backlog).
    waiting: int = 0


def bucket_edges(start: datetime, end: datetime, count: int) -> list[datetime]:
    """`count + 1` edges cutting `[start, end)` into `count` equal buckets."""
    if count < 1 or end <= start:
        raise ValueError("a series needs at least one bucket over a non-empty window")
    step = (end - start) / count
    return [start + step * k for k in range(count)] + [end]


def _bucket_of(column: Any, edges: list[datetime]) -> Any:
    """The bucket index of `column` (the caller bounds it to `[edges[0], edges[-1])`)."""
    inner = edges[1:-1]
    if not inner:
        return sa.literal(0)
    return sa.case(*[(column < edge, k) for k, edge in enumerate(inner)], else_=len(inner))


class TimeSeries:
    """The dashboard's bucketed reads over one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def buckets(
        self,
        tenant_id: str | None,
        start: datetime,
        end: datetime,
        count: int,
        *,
        sample: int = PERCENTILE_SAMPLE,
    ) -> list[Bucket]:
        """`count` buckets over `[start, end)`, oldest first."""
        edges = bucket_edges(start, end, count)
        scoped = [I.tenant_id == tenant_id] if tenant_id is not None else []
        finished_bucket = _bucket_of(I.finished_at, edges)
        attempt_bucket = _bucket_of(A.finished_at, edges)
        with self.db.session(tenant_id) as s:
            outcomes = s.execute(
                sa.select(finished_bucket, I.status, sa.func.count())
                .where(
                    I.finished_at >= start,
                    I.finished_at < end,
                    I.status.in_(FINAL_STATUSES),
                    *scoped,
                )
                .group_by(finished_bucket, I.status)
            ).all()
            runs = s.execute(
                sa.select(attempt_bucket, A.started_at, A.finished_at)
                .join(I, I.id == A.invocation_id)
                .where(
                    A.finished_at >= start,
                    A.finished_at < end,
                    A.outcome.in_(TIMED_OUTCOMES),
                    *scoped,
                )
                .order_by(A.finished_at.desc())
                .limit(sample)
            ).all()
            waiting = s.execute(self._waiting_query(edges[1:], start, scoped)).one()
        succeeded = [0] * count
        failed = [0] * count
        for index, status, n in outcomes:
            (succeeded if status == Status.SUCCEEDED else failed)[int(index)] += int(n)
        durations: list[list[float]] = [[] for _ in range(count)]
        for index, started, finished in runs:
            durations[int(index)].append((finished - started).total_seconds() * 1000)
        return [
            Bucket(
                start=edges[k],
                end=edges[k + 1],
                succeeded=succeeded[k],
                failed=failed[k],
                p95_ms=percentile(durations[k], 0.95),
                samples=len(durations[k]),
                waiting=int(waiting[k] or 0),
            )
            for k in range(count)
        ]

    @staticmethod
    def _waiting_query(moments: list[datetime], start: datetime, scoped: list[Any]) -> Any:
        """One row: for each moment, how many invocations were due and not yet started.

        Due means accepted by then and not scheduled for later; not started means neither
        started nor finished (a cancelled one) by then. One scan counts every moment.
        """

        def waiting_at(moment: datetime) -> Any:
            due = sa.and_(
                I.created_at <= moment,
                sa.or_(I.scheduled_for.is_(None), I.scheduled_for <= moment),
                sa.or_(I.started_at.is_(None), I.started_at > moment),
                sa.or_(I.finished_at.is_(None), I.finished_at > moment),
            )
            return sa.func.sum(sa.case((due, 1), else_=0))

        return sa.select(*[waiting_at(moment) for moment in moments]).where(
            I.created_at <= moments[-1],
            sa.or_(I.started_at.is_(None), I.started_at > start),
            sa.or_(I.finished_at.is_(None), I.finished_at > start),
            *scoped,
        )


def aligned_window(now: datetime, span: timedelta, count: int) -> tuple[datetime, datetime]:
    """A window of `span` ending at the first bucket boundary after `now`.

    Edges on whole multiples of the bucket width keep the bars in place between reloads.
    """
    step = span / count
    epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
    end = epoch + step * (((now - epoch) // step) + 1)
    return end - span, end
