"""What the dashboard shows, as frozen dataclasses read through the store's roles.

Every read takes `read_tenant`: a tenant id limits it to that tenant's rows (the store's
tenant-scoped session enforces it); None is an admin key reading across tenants.
Templates get these dataclasses, never a query or a row. Nothing here writes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq

from runtime.errors import BadRequest
from runtime.logs import redact
from runtime.recovery.heartbeat import HeartbeatOptions
from runtime.registry import Registry
from runtime.services.schedules import ScheduleService, ScheduleView
from runtime.store import Store, models
from runtime.store.models import FINISHED, Status
from runtime.store.stats import FunctionFigures
from runtime.store.views import AttemptView, InvocationView
from runtime.store.workers import WorkerView
from runtime.worker.queues import queue_depths

#: How far back function statistics look.
FUNCTION_WINDOW = timedelta(hours=24)


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
    def from_view(cls, view: AttemptView, *, with_traceback: bool) -> AttemptRow:
        """The attempt's row; its traceback only when `with_traceback` (it names server paths)."""
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
            traceback=redact(view.traceback) if view.traceback and with_traceback else None,
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
        self.schedule_service = schedules
        self.clock = clock or store.db.clock

    # --- who is looking -------------------------------------------------------------------------

    def tenant_ids(self) -> list[str]:
        return [t.id for t in self.store.tenants.list()]

    # --- overview -------------------------------------------------------------------------------

    def _status_counts(
        self, read_tenant: str | None, label: str, window: timedelta
    ) -> StatusCounts:
        tally = self.store.stats.status_tally(read_tenant, self.clock() - window)
        return StatusCounts(
            label=label,
            by_status=tally.created,
            succeeded=tally.succeeded,
            failed=tally.failed,
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
            for w in self.store.workers.list()
        ]

    # --- functions ------------------------------------------------------------------------------

    def functions(self, read_tenant: str | None) -> list[FunctionRow]:
        figures = self.store.stats.functions(read_tenant, self.clock() - FUNCTION_WINDOW)
        rows = []
        for function in self.registry:
            spec = function.spec
            recent = figures.get(function.name) or FunctionFigures()
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
                    succeeded=recent.succeeded,
                    failed=recent.failed,
                    p50_ms=recent.p50_ms,
                    p95_ms=recent.p95_ms,
                    samples=recent.samples,
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
        try:
            views, next_cursor = self.store.invocations.list(
                read_tenant,
                function=where.function,
                status=where.status,
                created_from=where.created_from,
                created_to=where.created_to,
                limit=limit,
                cursor=cursor,
            )
        except BadRequest as ex:  # only the cursor can be malformed here
            raise BadRequest("the page link is damaged; start from the first page") from ex
        return InvocationPage([InvocationRow.from_view(v) for v in views], next_cursor)

    def invocation(
        self,
        read_tenant: str | None,
        invocation_id: str,
        *,
        with_payload: bool,
        with_tracebacks: bool,
    ) -> InvocationDetail:
        """One invocation and its attempts; `InvocationNotFound` for another tenant's."""
        view = self.store.invocations.get(invocation_id, read_tenant)
        attempts = [
            AttemptRow.from_view(a, with_traceback=with_tracebacks)
            for a in self.store.invocations.attempts(view.id)
        ]
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
        return self.schedule_service.list(read_tenant)

    def schedule(self, read_tenant: str | None, schedule_id: str) -> ScheduleView:
        """One schedule with its upcoming runs and history; `ScheduleNotFound` if unseen."""
        return self.schedule_service.get(schedule_id, read_tenant)
