"""The operator's side of schedules: what the API and `ferry schedules` show and do.

Who sees what:

- an admin key reading across tenants sees every schedule and every run;
- a tenant's key (or an admin key acting for one with `X-Tenant-ID`) sees the schedules
  that make invocations in that tenant: those that target it and those that run for
  each active tenant. Their history, last run and last invocation are that tenant's own
  runs only. A schedule of another tenant answers exactly like a missing one.

Deleted schedules are left out of listings and answer as missing until restored.
"""

from __future__ import annotations

import builtins
import dataclasses
from datetime import datetime
from typing import Any

from runtime.errors import ScheduleNotFound
from runtime.scheduling.definition import ScheduleBook, ScheduleDefinition
from runtime.scheduling.scheduler import Scheduler
from runtime.services.audit import SYSTEM, Actor
from runtime.store.schedules import ScheduleRunView, ScheduleStateView
from runtime.store.views import InvocationView, rfc3339

#: Runs shown per schedule in a listing, and in the single-schedule view.
HISTORY_IN_LIST = 5
HISTORY_IN_ITEM = 20
#: Upcoming run times shown in the single-schedule view.
UPCOMING = 5


@dataclasses.dataclass(frozen=True)
class ScheduleView:
    """A schedule as one viewer sees it."""

    definition: ScheduleDefinition
    state: ScheduleStateView
    next_run_times: tuple[datetime, ...]
    last_run_at: datetime | None
    last_invocation_id: str | None
    history: tuple[ScheduleRunView, ...]

    def as_dict(self) -> dict[str, Any]:
        d = self.definition
        return {
            "id": d.id,
            "description": d.description,
            "function": d.function,
            "tenant": d.tenant,
            "each_active_tenant": d.each_active_tenant,
            "cron": d.cron,
            "timezone": d.timezone,
            "input": dict(d.input),
            "misfire": d.misfire,
            "misfire_grace_s": d.misfire_grace_s,
            "jitter_s": d.jitter_s,
            "paused": self.state.paused,
            "paused_at": rfc3339(self.state.paused_at),
            "next_run_at": rfc3339(self.next_run_times[0]) if self.next_run_times else None,
            "next_run_times": [rfc3339(t) for t in self.next_run_times],
            "last_run_at": rfc3339(self.last_run_at),
            "last_invocation_id": self.last_invocation_id,
            "history": [run_as_dict(run) for run in self.history],
        }


def run_as_dict(run: ScheduleRunView) -> dict[str, Any]:
    return {
        "tick_at": rfc3339(run.tick_at),
        "kind": run.kind,
        "lateness_ms": run.lateness_ms,
        "invocation": run.invocation.as_dict(),
    }


def _unregistered(schedule_id: str, now: datetime) -> ScheduleStateView:
    """The state of a schedule no scheduler has registered yet: running, never run."""
    return ScheduleStateView(
        id=schedule_id,
        paused_at=None,
        deleted_at=None,
        last_tick_at=None,
        last_run_at=None,
        last_invocation_id=None,
        removed_at=None,
        created_at=now,
        updated_at=now,
    )


class ScheduleService:
    """List, show, pause, resume, delete, restore and trigger the schedules of a book."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.store = scheduler.store
        self.clock = scheduler.clock
        self.audit = scheduler.invocations.store.audit

    @property
    def book(self) -> ScheduleBook:
        """The scheduler's book: `ferry dev` swaps it when the schedules' code changes."""
        return self.scheduler.book

    # --- reading ------------------------------------------------------------------------------

    def list(
        self, tenant_id: str | None, *, include_deleted: bool = False
    ) -> builtins.list[ScheduleView]:
        """The schedules `tenant_id` sees (None: all), by id."""
        now = self.clock()
        states = self.store.states()
        views = []
        for definition in self.book:
            state = states.get(definition.id) or _unregistered(definition.id, now)
            if not self._visible(definition, state, tenant_id, include_deleted):
                continue
            views.append(self._view(definition, state, tenant_id, now, HISTORY_IN_LIST, 1))
        return views

    def get(self, schedule_id: str, tenant_id: str | None) -> ScheduleView:
        """One schedule with its next run times and recent history."""
        now = self.clock()
        definition, state = self._find(schedule_id, tenant_id, now)
        return self._view(definition, state, tenant_id, now, HISTORY_IN_ITEM, UPCOMING)

    def _find(
        self, schedule_id: str, tenant_id: str | None, now: datetime
    ) -> tuple[ScheduleDefinition, ScheduleStateView]:
        definition = self.book.get(schedule_id)
        state = self.store.get(schedule_id) or _unregistered(schedule_id, now)
        if not self._visible(definition, state, tenant_id, include_deleted=False):
            raise ScheduleNotFound(f"no schedule {schedule_id!r}")
        return definition, state

    @staticmethod
    def _visible(
        definition: ScheduleDefinition,
        state: ScheduleStateView,
        tenant_id: str | None,
        include_deleted: bool,
    ) -> bool:
        if state.deleted and not include_deleted:
            return False
        return tenant_id is None or definition.targets(tenant_id)

    def _view(
        self,
        definition: ScheduleDefinition,
        state: ScheduleStateView,
        tenant_id: str | None,
        now: datetime,
        history: int,
        upcoming: int,
    ) -> ScheduleView:
        runs = self.store.runs(definition.id, tenant_id, limit=history)
        if tenant_id is None:
            last_run_at, last_invocation_id = state.last_run_at, state.last_invocation_id
        elif runs:
            last_run_at, last_invocation_id = runs[0].created_at, runs[0].invocation.id
        else:
            last_run_at, last_invocation_id = None, None
        stopped = state.paused or state.deleted
        return ScheduleView(
            definition=definition,
            state=state,
            next_run_times=() if stopped else tuple(definition.times.upcoming(now, upcoming)),
            last_run_at=last_run_at,
            last_invocation_id=last_invocation_id,
            history=tuple(runs),
        )

    # --- acting -------------------------------------------------------------------------------
    # Each action is recorded in the audit trail with its `actor` and the tenant it acted
    # for (None: across tenants); all but a trigger in the transaction of the change.

    def pause(
        self, schedule_id: str, tenant_id: str | None = None, *, actor: Actor = SYSTEM
    ) -> ScheduleView:
        now = self.clock()
        self._find(schedule_id, tenant_id, now)
        audit = actor.entry("schedule.pause", tenant_id=tenant_id, target=schedule_id)
        self.store.pause(schedule_id, now, audit=audit)
        return self.get(schedule_id, tenant_id)

    def resume(
        self, schedule_id: str, tenant_id: str | None = None, *, actor: Actor = SYSTEM
    ) -> ScheduleView:
        now = self.clock()
        self._find(schedule_id, tenant_id, now)
        audit = actor.entry("schedule.resume", tenant_id=tenant_id, target=schedule_id)
        self.store.resume(schedule_id, now, audit=audit)
        return self.get(schedule_id, tenant_id)

    def delete(
        self, schedule_id: str, tenant_id: str | None = None, *, actor: Actor = SYSTEM
    ) -> None:
        now = self.clock()
        self._find(schedule_id, tenant_id, now)
        audit = actor.entry("schedule.delete", tenant_id=tenant_id, target=schedule_id)
        self.store.delete(schedule_id, now, audit=audit)

    def restore(self, *, actor: Actor = SYSTEM) -> builtins.list[str]:
        """Register every schedule in the code again; the ids that were deleted."""
        audit = actor.entry("schedule.restore", tenant_id=None, target="*")
        return self.store.restore(self.book.ids(), self.clock(), audit=audit)

    def trigger(
        self,
        schedule_id: str,
        tenant_id: str | None = None,
        *,
        token: str | None = None,
        request_id: str | None = None,
        actor: Actor = SYSTEM,
    ) -> builtins.list[InvocationView]:
        """Run it now; see `Scheduler.trigger`.

        Recorded once it has run, by itself: a trigger makes its invocations one by one.
        A repeated trigger (the same `token`) is recorded again, naming the same invocations.
        """
        invocations = self.scheduler.trigger(
            schedule_id, tenant_id=tenant_id, token=token, request_id=request_id
        )
        self.audit.append(
            actor.entry(
                "schedule.trigger",
                tenant_id=tenant_id,
                target=schedule_id,
                detail={"invocations": [i.id for i in invocations]},
            )
        )
        return invocations
