"""What the dashboard shows, as frozen dataclasses: the only place its pages query.

Every read takes `read_tenant`: a tenant id limits it to that tenant's rows (the store's
tenant-scoped session enforces it, and the queries say it too); None is an admin key
reading across tenants. Templates get these dataclasses, never a query or a row.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import sqlalchemy as sa

from runtime.errors import BadRequest
from runtime.heartbeat import HeartbeatOptions, Workers, WorkerView
from runtime.logs import REDACTED, SECRET_KEY, SECRET_VALUE
from runtime.queues import queue_depths
from runtime.registry import Registry
from runtime.services.schedules import ScheduleService, ScheduleView
from runtime.store import Store, models, paging
from runtime.store.models import FINISHED, Status
from runtime.store.tenants import Principal
from runtime.store.views import AttemptView, InvocationView

I = models.Invocation  # noqa: E741 - the table most reads here are about
A = models.Attempt
STATUSES = tuple(s.value for s in Status)
#: How far back function statistics look, and how many attempts feed the percentiles.
FUNCTION_WINDOW = timedelta(hours=24)
PERCENTILE_SAMPLE = 5000


def redact(value: Any) -> Any:
    """Hide values under secret-looking keys and key-shaped strings, as the logs do."""
    if isinstance(value, Mapping):
        return {k: REDACTED if SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUE.sub(REDACTED, value)
    return value


def pretty_json(value: Any) -> str:
    return json.dumps(redact(value), indent=2, sort_keys=True, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class StatusCounts:
    """Invocations created in a window by status, and what finished in it."""

    label: str
    by_status: dict[str, int]
    succeeded: int
    failed: int
    minutes: float

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def throughput_per_min(self) -> float:
        return (self.succeeded + self.failed) / self.minutes

    @property
    def failure_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return None if finished == 0 else self.failed / finished


@dataclasses.dataclass(frozen=True)
class QueueRow:
    name: str
    length: int
    oldest_age_s: float
    live_workers: int


@dataclasses.dataclass(frozen=True)
class WorkerRow:
    """A worker as the overview shows it: as stored, plus what the time makes of it."""

    worker: WorkerView
    seen_ago_s: float
    #: `WorkerView.display_state` at the time of the page.
    state: str


@dataclasses.dataclass(frozen=True)
class Overview:
    hour: StatusCounts
    day: StatusCounts
    #: None when this viewer may not see infrastructure (not an admin key).
    queues: list[QueueRow] | None
    workers: list[WorkerRow] | None
    #: Why queue figures are missing (the broker did not answer), if they are.
    queues_error: str | None = None


@dataclasses.dataclass(frozen=True)
class FunctionRow:
    name: str
    description: str
    queue: str
    max_retries: int
    timeout_s: float
    min_backoff_s: float
    max_backoff_s: float
    retry_on: tuple[str, ...]
    permanent_on: tuple[str, ...]
    input_schema: str
    output_schema: str | None
    succeeded: int
    failed: int
    p50_ms: float | None
    p95_ms: float | None
    samples: int

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return None if finished == 0 else self.succeeded / finished


@dataclasses.dataclass(frozen=True)
class InvocationFilter:
    function: str | None = None
    status: str | None = None
    #: Only for admin keys; others always read their own tenant.
    tenant: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclasses.dataclass(frozen=True)
class InvocationRow:
    id: str
    function: str
    tenant_id: str
    status: str
    trigger: str
    attempts: int
    created_at: datetime
    scheduled_for: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    error_type: str | None

    @classmethod
    def from_view(cls, view: InvocationView) -> InvocationRow:
        return cls(
            id=view.id,
            function=view.function,
            tenant_id=view.tenant_id,
            status=view.status,
            trigger=view.trigger,
            attempts=view.attempts,
            created_at=view.created_at,
            scheduled_for=view.scheduled_for,
            finished_at=view.finished_at,
            duration_ms=view.duration_ms,
            error_type=(view.error or {}).get("type"),
        )


@dataclasses.dataclass(frozen=True)
class InvocationPage:
    rows: list[InvocationRow]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True)
class AttemptRow:
    number: int
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    outcome: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    worker_id: str | None

    @classmethod
    def from_view(cls, view: AttemptView) -> AttemptRow:
        error = view.error or {}
        duration = None
        if view.finished_at is not None:
            duration = int((view.finished_at - view.started_at).total_seconds() * 1000)
        message = error.get("message")
        return cls(
            number=view.number,
            started_at=view.started_at,
            finished_at=view.finished_at,
            duration_ms=duration,
            outcome=view.outcome,
            error_type=error.get("type"),
            error_message=redact(message) if isinstance(message, str) else None,
            traceback=redact(view.traceback) if view.traceback else None,
            worker_id=view.worker_id,
        )


@dataclasses.dataclass(frozen=True)
class InvocationDetail:
    invocation: InvocationView
    attempts: list[AttemptRow]
    #: The input, pretty-printed; None when the viewer may not see it.
    payload: str | None
    result: str | None
    error_type: str | None
    error_message: str | None

    @property
    def retryable(self) -> bool:
        return self.invocation.status in (Status.FAILED, Status.CANCELLED)

    @property
    def cancellable(self) -> bool:
        return self.invocation.status in models.CLAIMABLE

    @property
    def finished(self) -> bool:
        return self.invocation.status in FINISHED


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        return paging.decode_cursor(cursor)
    except BadRequest as ex:
        raise BadRequest("the page link is damaged; start from the first page") from ex


class DashboardReadModel:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        broker: dramatiq.Broker,
        heartbeat: HeartbeatOptions,
        schedules: ScheduleService,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.broker = broker
        self.heartbeat = heartbeat
        self.schedule_control = schedules
        self.workers = Workers(store.db)
        self.clock = clock or store.db.clock

    # --- who is looking -------------------------------------------------------------------------

    def principal(self, key_id: str) -> Principal | None:
        """The key's principal if it still authenticates (not revoked, not expired)."""
        now = self.clock()
        with self.store.db.session() as s:
            row = s.get(models.ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return None
            if row.expires_at is not None and row.expires_at <= now:
                return None
            return Principal(
                key_id=row.id, tenant_id=row.tenant_id, scopes=frozenset(row.scopes.split(","))
            )

    def tenant_ids(self) -> list[str]:
        return [t.id for t in self.store.tenants.list()]

    # --- overview -------------------------------------------------------------------------------

    def _status_counts(
        self, read_tenant: str | None, label: str, window: timedelta
    ) -> StatusCounts:
        since = self.clock() - window
        scoped = [I.tenant_id == read_tenant] if read_tenant is not None else []
        with self.store.db.session(read_tenant) as s:
            created = dict(
                s.execute(
                    sa.select(I.status, sa.func.count())
                    .where(I.created_at >= since, *scoped)
                    .group_by(I.status)
                ).all()
            )
            finished = dict(
                s.execute(
                    sa.select(I.status, sa.func.count())
                    .where(
                        I.finished_at >= since,
                        I.status.in_((Status.SUCCEEDED, Status.FAILED)),
                        *scoped,
                    )
                    .group_by(I.status)
                ).all()
            )
        return StatusCounts(
            label=label,
            by_status={status: int(created.get(status, 0)) for status in STATUSES},
            succeeded=int(finished.get(Status.SUCCEEDED, 0)),
            failed=int(finished.get(Status.FAILED, 0)),
            minutes=window.total_seconds() / 60,
        )

    def overview(self, read_tenant: str | None, *, infrastructure: bool) -> Overview:
        hour = self._status_counts(read_tenant, "last hour", timedelta(hours=1))
        day = self._status_counts(read_tenant, "last 24 hours", timedelta(days=1))
        if not infrastructure:
            return Overview(hour=hour, day=day, queues=None, workers=None)
        workers = self.worker_rows()
        consumers: dict[str, int] = {}
        for row in workers:
            if row.state == "live":
                for queue in row.worker.queues:
                    consumers[queue] = consumers.get(queue, 0) + 1
        now_s = self.clock().timestamp()
        try:
            depths = queue_depths(self.broker)
        except Exception as ex:  # the page still shows everything else
            return Overview(
                hour,
                day,
                queues=[],
                workers=workers,
                queues_error=f"the broker did not answer ({type(ex).__name__})",
            )
        queues = [
            QueueRow(d.queue, d.length, d.oldest_age_s(now_s), consumers.get(d.queue, 0))
            for d in depths
        ]
        return Overview(hour=hour, day=day, queues=queues, workers=workers)

    def worker_rows(self) -> list[WorkerRow]:
        now = self.clock()
        return [
            WorkerRow(
                worker=w,
                seen_ago_s=max(0.0, (now - w.last_seen_at).total_seconds()),
                state=w.display_state(now, self.heartbeat.stale_after_s),
            )
            for w in self.workers.list()
        ]

    # --- functions ------------------------------------------------------------------------------

    def functions(self, read_tenant: str | None) -> list[FunctionRow]:
        since = self.clock() - FUNCTION_WINDOW
        scoped = [I.tenant_id == read_tenant] if read_tenant is not None else []
        with self.store.db.session(read_tenant) as s:
            outcomes: dict[tuple[str, str], int] = {
                (fn, status): int(n)
                for fn, status, n in s.execute(
                    sa.select(I.function, I.status, sa.func.count())
                    .where(
                        I.finished_at >= since,
                        I.status.in_((Status.SUCCEEDED, Status.FAILED)),
                        *scoped,
                    )
                    .group_by(I.function, I.status)
                )
            }
            runs = s.execute(
                sa.select(I.function, A.started_at, A.finished_at)
                .join(I, I.id == A.invocation_id)
                .where(
                    A.finished_at >= since,
                    A.outcome.in_(("succeeded", "failed", "retrying", "timed_out")),
                    *scoped,
                )
                .order_by(A.finished_at.desc())
                .limit(PERCENTILE_SAMPLE)
            )
            durations: dict[str, list[float]] = {}
            for fn, started, finished in runs:
                if finished is not None:  # the query asks for finished ones; this tells mypy
                    ms = (finished - started).total_seconds() * 1000
                    durations.setdefault(fn, []).append(ms)
        rows = []
        for function in self.registry:
            spec = function.spec
            times = sorted(durations.get(function.name, []))
            described = function.describe()
            rows.append(
                FunctionRow(
                    name=function.name,
                    description=spec.description,
                    queue=function.queue,
                    max_retries=function.max_retries,
                    timeout_s=function.timeout,
                    min_backoff_s=function.min_backoff,
                    max_backoff_s=function.max_backoff,
                    retry_on=tuple(c.__name__ for c in spec.retry_on),
                    permanent_on=tuple(c.__name__ for c in spec.permanent_on),
                    input_schema=json.dumps(described["input_schema"], indent=2),
                    output_schema=(
                        json.dumps(described["output_schema"], indent=2)
                        if described["output_schema"] is not None
                        else None
                    ),
                    succeeded=outcomes.get((function.name, Status.SUCCEEDED), 0),
                    failed=outcomes.get((function.name, Status.FAILED), 0),
                    p50_ms=_percentile(times, 0.50),
                    p95_ms=_percentile(times, 0.95),
                    samples=len(times),
                )
            )
        return rows

    # --- invocations ----------------------------------------------------------------------------

    def invocations(
        self,
        read_tenant: str | None,
        where: InvocationFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> InvocationPage:
        """Newest first, in pages of `limit`."""
        query = sa.select(I).order_by(I.created_at.desc(), I.id.desc()).limit(limit + 1)
        if read_tenant is not None:
            query = query.where(I.tenant_id == read_tenant)
        if where.function:
            query = query.where(I.function == where.function)
        if where.status:
            query = query.where(I.status == where.status)
        if where.created_from is not None:
            query = query.where(I.created_at >= where.created_from)
        if where.created_to is not None:
            query = query.where(I.created_at < where.created_to)
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    I.created_at < created_at, sa.and_(I.created_at == created_at, I.id < last_id)
                )
            )
        with self.store.db.session(read_tenant) as s:
            views = [InvocationView.from_row(r) for r in s.scalars(query)]
        rows = [InvocationRow.from_view(v) for v in views[:limit]]
        next_cursor = (
            paging.encode_cursor(rows[-1].created_at, rows[-1].id) if len(views) > limit else None
        )
        return InvocationPage(rows, next_cursor)

    def invocation(
        self, read_tenant: str | None, invocation_id: str, *, with_payload: bool
    ) -> InvocationDetail:
        """One invocation and its attempts; `InvocationNotFound` for another tenant's."""
        view = self.store.invocations.get(invocation_id, read_tenant)
        attempts = [AttemptRow.from_view(a) for a in self.store.invocations.attempts(view.id)]
        error = view.error or {}
        message = error.get("message")
        return InvocationDetail(
            invocation=view,
            attempts=attempts,
            payload=pretty_json(view.payload) if with_payload else None,
            result=pretty_json(view.result) if view.result is not None else None,
            error_type=error.get("type"),
            error_message=redact(message) if isinstance(message, str) else None,
        )

    # --- schedules ------------------------------------------------------------------------------

    def schedules(self, read_tenant: str | None) -> list[ScheduleView]:
        """The schedules this viewer sees, with their next run and recent runs.

        A tenant sees the schedules that make invocations in it, with its own runs only
        (`runtime.services.schedules`); None sees all.
        """
        return self.schedule_control.list(read_tenant)

    def schedule(self, read_tenant: str | None, schedule_id: str) -> ScheduleView:
        """One schedule with its upcoming runs and history; `ScheduleNotFound` if unseen."""
        return self.schedule_control.get(schedule_id, read_tenant)
