"""Turn due ticks into invocations, through the same `InvocationService.accept` as HTTP.

`Scheduler.fire_due(now)` is all a clock has to call, once a minute or more often; any
number of processes may call it at once. Each process:

1. reads every schedule's state (cursor, paused, deleted) from the store;
2. plans each schedule's ticks (`ticks.plan_ticks`, a pure function);
3. accepts one invocation per target tenant and tick, keyed
   `schedule:{id}:{tick in UTC}`: a second scheduler firing the same tick meets the
   unique key and gets the same invocation back;
4. records the run, then moves the cursor forward (never back).

A scheduler that dies between 3 and 4 leaves the cursor behind; the next one fires the
same ticks again and the keys make that a no-op. So there is no lock and no leader: any
scheduler may stop at any moment, and the ones left (or the next one) finish its work.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from runtime.errors import (
    FerryError,
    IdempotencyConflict,
    InputInvalid,
    NotFound,
    ScheduleNotFound,
    TenantSuspended,
    Unavailable,
)
from runtime.scheduling.definition import ScheduleBook, ScheduleDefinition
from runtime.scheduling.ticks import TickPlan, jitter, manual_key, plan_ticks, tick_key
from runtime.store import Clock, utcnow
from runtime.store.models import TenantStatus
from runtime.store.schedules import Schedules, ScheduleStateView
from runtime.store.views import InvocationView, rfc3339

if TYPE_CHECKING:
    from runtime.app import Runtime
    from runtime.services.invocations import InvocationService
    from runtime.store.tenants import Tenants

log = structlog.get_logger("ferry.scheduler")


@dataclasses.dataclass(frozen=True)
class Fired:
    """One invocation a tick made (or found made by another scheduler)."""

    schedule_id: str
    tick_at: datetime
    tenant_id: str
    invocation_id: str
    #: False when another scheduler (or an earlier try) had made it already.
    created: bool


@dataclasses.dataclass
class FireReport:
    """What one `fire_due` call did."""

    now: datetime
    fired: list[Fired] = dataclasses.field(default_factory=list)
    #: Schedule id -> why due ticks were passed over (`paused`, `deleted`, `missed`).
    passed_over: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Schedule ids whose ticks could not be fired now; they are tried again next time.
    failed: list[str] = dataclasses.field(default_factory=list)

    @property
    def created(self) -> list[Fired]:
        return [f for f in self.fired if f.created]


class Scheduler:
    """Fires the schedules of one `ScheduleBook` as invocations of a runtime."""

    def __init__(
        self,
        book: ScheduleBook,
        store: Schedules,
        tenants: Tenants,
        invocations: InvocationService,
        *,
        clock: Clock = utcnow,
        new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.book = book
        self.store = store
        self.tenants = tenants
        self.invocations = invocations
        self.clock = clock
        self.new_token = new_token

    @classmethod
    def from_runtime(cls, runtime: Runtime, book: ScheduleBook | None = None) -> Scheduler:
        """The scheduler of a runtime: its store, tenants, invocations and clock.

        Without `book`, the schedules of `FERRY_SCHEDULES_MODULE` are loaded and checked
        against the runtime's functions (`ScheduleDefinitionError` names a bad one).
        """
        if book is None:
            book = ScheduleBook.load(runtime.settings.schedules_module, runtime.registry)
        return cls(
            book,
            runtime.store.schedules,
            runtime.store.tenants,
            runtime.invocations,
            clock=runtime.store.db.clock,
        )

    def register(self, now: datetime | None = None) -> None:
        """Make the store's list of schedules agree with the code (see `Schedules.register`)."""
        self.store.register(self.book.ids(), now or self.clock())

    # --- ticks --------------------------------------------------------------------------------

    def fire_due(self, now: datetime | None = None) -> FireReport:
        """Fire every tick that is due at `now` (default: the clock) and not yet fired."""
        now = now or self.clock()
        report = FireReport(now)
        states = self.store.states()
        for definition in self.book:
            state = states.get(definition.id)
            try:
                if state is None:  # defined after this process registered
                    state = self.store.ensure(definition.id, now)
                self._fire_schedule(definition, state, now, report)
            except Exception as ex:
                # One schedule's trouble must not stop the others; its ticks stay due.
                report.failed.append(definition.id)
                log.warning(
                    "schedule_fire_failed",
                    schedule_id=definition.id,
                    error_type=type(ex).__name__,
                    error=str(ex),
                    exc_info=not isinstance(ex, FerryError),
                )
        return report

    def _fire_schedule(
        self,
        definition: ScheduleDefinition,
        state: ScheduleStateView,
        now: datetime,
        report: FireReport,
    ) -> None:
        plan: TickPlan = plan_ticks(
            definition,
            cursor=state.last_tick_at or now,
            paused=state.paused,
            deleted=state.deleted,
            now=now,
        )
        if plan.advance_to is None:
            return
        if plan.passed_over is not None:
            report.passed_over[definition.id] = plan.passed_over
        if plan.passed_over == "missed":
            log.warning(
                "schedule_ticks_missed",
                schedule_id=definition.id,
                policy=definition.misfire,
                missed_until=rfc3339(plan.missed_until),
                since=rfc3339(state.last_tick_at),
            )
        for tick in plan.fire:
            report.fired.extend(self._fire_tick(definition, tick, now))
        self.store.advance(definition.id, plan.advance_to, now)

    def _fire_tick(
        self, definition: ScheduleDefinition, tick: datetime, now: datetime
    ) -> list[Fired]:
        fired: list[Fired] = []
        key = tick_key(definition.id, tick)
        for tenant_id in self._tenants_of(definition):
            try:
                invocation, created = self.invocations.accept(
                    tenant_id=tenant_id,
                    function=definition.function,
                    payload=dict(definition.input),
                    idempotency_key=key,
                    trigger="schedule",
                    at=tick + jitter(definition, tick, tenant_id),
                )
            except Unavailable:
                raise  # the tick stays due: the next call fires it (the key dedupes the rest)
            except (TenantSuspended, NotFound, IdempotencyConflict, InputInvalid) as ex:
                # Only this tenant's run of the tick is lost; say so and go on.
                log.error(
                    "schedule_tick_refused",
                    schedule_id=definition.id,
                    tick=rfc3339(tick),
                    tenant_id=tenant_id,
                    error_type=type(ex).__name__,
                    error=ex.message,
                )
                continue
            self.store.record_run(
                schedule_id=definition.id,
                tenant_id=tenant_id,
                tick_at=tick,
                kind="tick",
                invocation_id=invocation.id,
                now=now,
            )
            fired.append(Fired(definition.id, tick, tenant_id, invocation.id, created))
        created_count = sum(1 for f in fired if f.created)
        if created_count:
            log.info(
                "schedule_tick_fired",
                schedule_id=definition.id,
                tick=rfc3339(tick),
                invocations=created_count,
                lateness_ms=int((now - tick).total_seconds() * 1000),
            )
        return fired

    def _tenants_of(self, definition: ScheduleDefinition) -> list[str]:
        if definition.each_active_tenant:
            return [t.id for t in self.tenants.list(status=TenantStatus.ACTIVE)]
        return [definition.tenant]

    # --- manual trigger -----------------------------------------------------------------------

    def trigger(
        self,
        schedule_id: str,
        *,
        tenant_id: str | None = None,
        token: str | None = None,
        request_id: str | None = None,
    ) -> list[InvocationView]:
        """Run a schedule now, outside its ticks (paused or not).

        With `tenant_id`, only in that tenant (which the schedule must target); else in
        every tenant it targets. The same `token` gives the same invocations back, so a
        retried trigger does not run twice.
        """
        definition = self.book.get(schedule_id)
        now = self.clock()
        state = self.store.ensure(schedule_id, now)
        if state.deleted:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}")
        if tenant_id is not None:
            if not definition.targets(tenant_id):
                raise ScheduleNotFound(f"no schedule {schedule_id!r}")
            tenants = [tenant_id]
        else:
            tenants = self._tenants_of(definition)
        key = manual_key(schedule_id, token or self.new_token())
        invocations = []
        for tenant in tenants:
            invocation, _created = self.invocations.accept(
                tenant_id=tenant,
                function=definition.function,
                payload=dict(definition.input),
                idempotency_key=key,
                trigger="schedule",
                request_id=request_id,
                at=now,
            )
            self.store.record_run(
                schedule_id=schedule_id,
                tenant_id=tenant,
                tick_at=invocation.scheduled_for or now,
                kind="manual",
                invocation_id=invocation.id,
                now=now,
            )
            invocations.append(invocation)
        log.info("schedule_triggered", schedule_id=schedule_id, invocations=len(invocations))
        return invocations
