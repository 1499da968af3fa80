"""Aggregate reads for the dashboard: invocations by status, and per-function figures.

Every read takes `tenant_id`: a tenant id limits it to that tenant's rows (the
tenant-scoped session enforces it, and the queries say it too); None reads across tenants.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import sqlalchemy as sa

from runtime.quantiles import percentile
from runtime.store import models
from runtime.store.db import Database
from runtime.store.models import Status

I = models.Invocation  # noqa: E741 - the table most reads here are about
A = models.Attempt
#: At most this many of the latest attempts feed the duration percentiles.
PERCENTILE_SAMPLE = 5000
#: Attempt outcomes whose run time counts (a lost attempt's end is not its own).
TIMED_OUTCOMES = ("succeeded", "failed", "retrying", "timed_out")
FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED)


@dataclasses.dataclass(frozen=True)
class StatusTally:
    """Invocations created since a time by status, and how many finished since then."""

    #: Every status, maybe 0.
    created: dict[str, int]
    succeeded: int
    failed: int


@dataclasses.dataclass(frozen=True)
class FunctionFigures:
    """What one function's invocations and attempts came to since a time."""

    succeeded: int = 0
    failed: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    #: How many attempt run times the percentiles are computed over.
    samples: int = 0


class Stats:
    """The dashboard's aggregate reads over one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def status_tally(self, tenant_id: str | None, since: datetime) -> StatusTally:
        scoped = [I.tenant_id == tenant_id] if tenant_id is not None else []
        count = sa.func.count()
        with self.db.session(tenant_id) as s:
            created = dict(
                s.execute(
                    sa.select(I.status, count)
                    .where(I.created_at >= since, *scoped)
                    .group_by(I.status)
                ).all()
            )
            finished = dict(
                s.execute(
                    sa.select(I.status, count)
                    .where(I.finished_at >= since, I.status.in_(FINAL_STATUSES), *scoped)
                    .group_by(I.status)
                ).all()
            )
        return StatusTally(
            created={status.value: int(created.get(status, 0)) for status in Status},
            succeeded=int(finished.get(Status.SUCCEEDED, 0)),
            failed=int(finished.get(Status.FAILED, 0)),
        )

    def functions(
        self, tenant_id: str | None, since: datetime, *, sample: int = PERCENTILE_SAMPLE
    ) -> dict[str, FunctionFigures]:
        """Per function: final outcomes since `since` and run-time percentiles of attempts."""
        scoped = [I.tenant_id == tenant_id] if tenant_id is not None else []
        with self.db.session(tenant_id) as s:
            outcomes: dict[tuple[str, str], int] = {
                (fn, status): int(n)
                for fn, status, n in s.execute(
                    sa.select(I.function, I.status, sa.func.count())
                    .where(I.finished_at >= since, I.status.in_(FINAL_STATUSES), *scoped)
                    .group_by(I.function, I.status)
                )
            }
            runs = s.execute(
                sa.select(I.function, A.started_at, A.finished_at)
                .join(I, I.id == A.invocation_id)
                .where(A.finished_at >= since, A.outcome.in_(TIMED_OUTCOMES), *scoped)
                .order_by(A.finished_at.desc())
                .limit(sample)
            )
            durations: dict[str, list[float]] = {}
            for fn, started, finished in runs:
                if finished is not None:  # the query asks for finished ones; this tells mypy
                    ms = (finished - started).total_seconds() * 1000
                    durations.setdefault(fn, []).append(ms)
        names = {fn for fn, _status in outcomes} | durations.keys()
        return {
            fn: FunctionFigures(
                succeeded=outcomes.get((fn, Status.SUCCEEDED), 0),
                failed=outcomes.get((fn, Status.FAILED), 0),
                p50_ms=percentile(durations.get(fn, []), 0.50),
                p95_ms=percentile(durations.get(fn, []), 0.95),
                samples=len(durations.get(fn, [])),
            )
            for fn in names
        }
