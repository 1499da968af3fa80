"""Operating schedules: pause, resume, delete, restore and trigger, across restarts.

Each test runs on the embedded backends and on real PostgreSQL and Redis; every
`build()` is a fresh process's runtime on the same store, the clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from runtime.app import Runtime
from runtime.errors import ScheduleNotFound, TenantSuspended
from runtime.scheduling import ALL_ACTIVE
from runtime.scheduling.scheduler import Scheduler
from runtime.services.schedules import ScheduleService
from runtime.store.models import TenantStatus
from tests.conftest import prepare
from tests.unit.test_schedules_support import (
    FakeClock,
    every_minute,
    scheduler_for,
    state_of,
    tick_keys,
    utc,
)

START = utc(2026, 6, 1, 11, 59, 30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def build(backend, settings_for, clock) -> Iterator[Callable[..., Runtime]]:
    built: list[Runtime] = []

    def make() -> Runtime:
        runtime = prepare(Runtime(settings_for(backend), clock=clock))
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


@pytest.fixture
def rt(build) -> Runtime:
    runtime = build()
    for tenant in ("t-one", "t-two"):
        runtime.store.tenants.create(tenant)
    return runtime


def start(runtime: Runtime, *definitions) -> tuple[Scheduler, ScheduleService]:
    scheduler = scheduler_for(runtime, *definitions)
    scheduler.register()
    return scheduler, ScheduleService(scheduler)


def tick(clock: FakeClock, scheduler: Scheduler, minute: int, second: float = 0.01) -> int:
    """Fire at 12:`minute`:`second`; how many invocations that made."""
    clock.set(utc(2026, 6, 1, 12, minute) + timedelta(seconds=second))
    return len(scheduler.fire_due().created)


def test_pause_survives_a_restart_and_resume_fires_from_the_next_tick(build, rt, clock):
    definition = every_minute(misfire="run_once")
    # Given a paused schedule, and every process restarted
    _scheduler, control = start(rt, definition)
    view = control.pause("every-minute")
    assert view.state.paused and view.next_run_times == ()
    rt.close()
    restarted = build()
    scheduler, control = start(restarted, definition)

    # When its ticks come
    assert [tick(clock, scheduler, m) for m in (0, 1, 2)] == [0, 0, 0]

    # Then it stayed paused; resumed at 12:02:30 it does not catch up, even under run_once
    assert control.get("every-minute", None).state.paused
    clock.set(utc(2026, 6, 1, 12, 2, 30))
    resumed = control.resume("every-minute")
    assert not resumed.state.paused
    assert resumed.next_run_times[0] == utc(2026, 6, 1, 12, 3)
    assert tick(clock, scheduler, 2, 45) == 0
    assert tick(clock, scheduler, 3) == 1
    assert [k for _, k in tick_keys(restarted, "every-minute")] == [
        "schedule:every-minute:2026-06-01T12:03:00.000Z"
    ]


def test_pausing_or_resuming_twice_changes_nothing(rt, clock):
    _scheduler, control = start(rt, every_minute())
    first = control.pause("every-minute")
    clock.set(START + timedelta(seconds=10))
    assert control.pause("every-minute").state.paused_at == first.state.paused_at
    control.resume("every-minute")
    before = state_of(rt, "every-minute")
    assert control.resume("every-minute").state == before


def test_delete_stops_it_until_restore_across_restarts(build, rt, clock):
    definition = every_minute()
    scheduler, control = start(rt, definition)
    assert tick(clock, scheduler, 0) == 1
    # Given it is deleted
    control.delete("every-minute")
    assert control.list(None) == []
    with pytest.raises(ScheduleNotFound):
        control.get("every-minute", None)
    with pytest.raises(ScheduleNotFound):
        control.delete("every-minute")
    with pytest.raises(ScheduleNotFound):
        control.trigger("every-minute")

    # When every process restarts and ticks pass
    rt.close()
    restarted = build()
    scheduler, control = start(restarted, definition)
    assert [tick(clock, scheduler, m) for m in (1, 2)] == [0, 0]

    # Then restore brings it back from the next tick, without catching up
    clock.set(utc(2026, 6, 1, 12, 2, 20))
    assert control.restore() == ["every-minute"]
    assert control.restore() == []
    assert [v.definition.id for v in control.list(None)] == ["every-minute"]
    assert tick(clock, scheduler, 2, 40) == 0
    assert tick(clock, scheduler, 3) == 1


def test_a_schedule_removed_from_the_code_leaves_the_list_and_a_new_one_joins_at_start(
    build, rt, clock
):
    kept, dropped, added = every_minute("kept"), every_minute("dropped"), every_minute("added")
    _scheduler, control = start(rt, kept, dropped)
    assert [v.definition.id for v in control.list(None)] == ["dropped", "kept"]
    rt.close()

    # When the next start's code has `added` instead of `dropped`
    clock.set(utc(2026, 6, 1, 12, 5, 30))
    restarted = build()
    scheduler, control = start(restarted, kept, added)

    # Then the list follows the code, and the new one starts from now (no back-fill)
    assert [v.definition.id for v in control.list(None)] == ["added", "kept"]
    assert state_of(restarted, "dropped").removed_at == utc(2026, 6, 1, 12, 5, 30)
    assert state_of(restarted, "added").last_tick_at == utc(2026, 6, 1, 12, 5, 30)
    with pytest.raises(ScheduleNotFound):
        control.get("dropped", None)
    report = scheduler.fire_due()
    assert {f.schedule_id for f in report.created} == {"kept"}  # its 12:05 tick, 30 s late
    assert tick(clock, scheduler, 6) == 2

    # And a schedule that comes back starts from its return, not from when it left
    restarted.close()
    clock.set(utc(2026, 6, 1, 12, 9, 30))
    again = build()
    scheduler, control = start(again, kept, added, every_minute("dropped", misfire="run_once"))
    assert state_of(again, "dropped").removed_at is None
    assert {f.schedule_id for f in scheduler.fire_due().created} == {"kept", "added"}
    assert tick_keys(again, "dropped") == []


def test_trigger_runs_it_now_once_per_token_even_when_paused(rt, clock):
    _scheduler, control = start(rt, every_minute("everyone", tenant=ALL_ACTIVE))
    control.pause("everyone")
    clock.set(START + timedelta(seconds=5))

    # When an operator triggers it twice with the same token
    first = control.trigger("everyone", token="retry-safe")
    second = control.trigger("everyone", token="retry-safe")

    # Then one invocation per active tenant, now, and the retry returned the same ones
    assert sorted(i.tenant_id for i in first) == ["t-one", "t-two"]
    assert [i.id for i in first] == [i.id for i in second]
    assert all(i.trigger == "schedule" and i.scheduled_for == clock() for i in first)
    assert all(i.idempotency_key == "schedule:everyone:manual:retry-safe" for i in first)
    view = control.get("everyone", None)
    assert [run.kind for run in view.history] == ["manual", "manual"]
    assert view.last_run_at == clock()
    # A new trigger without a token is a new run; one for a tenant runs there only
    assert len(control.trigger("everyone")) == 2
    [only] = control.trigger("everyone", "t-two")
    assert only.tenant_id == "t-two"


def test_trigger_for_a_tenant_the_schedule_does_not_target_is_not_found(rt):
    _scheduler, control = start(rt, every_minute(tenant="t-one"))
    with pytest.raises(ScheduleNotFound):
        control.trigger("every-minute", "t-two")
    with pytest.raises(ScheduleNotFound):
        control.trigger("no-such-schedule")


def test_a_suspended_tenant_is_refused_and_the_schedule_goes_on(rt, clock):
    scheduler, control = start(rt, every_minute(tenant="t-one"))
    rt.store.tenants.set_status("t-one", TenantStatus.SUSPENDED)
    # A tick for a suspended tenant makes nothing, and does not stay stuck on that tick
    assert tick(clock, scheduler, 0) == 0
    assert state_of(rt, "every-minute").last_tick_at == utc(2026, 6, 1, 12, 0)
    with pytest.raises(TenantSuspended):
        control.trigger("every-minute")
    # Resumed, the tenant's next tick runs
    rt.store.tenants.set_status("t-one", TenantStatus.ACTIVE)
    assert tick(clock, scheduler, 1) == 1


def test_what_a_tenant_sees(rt, clock):
    scheduler, control = start(
        rt,
        every_minute("for-one", tenant="t-one"),
        every_minute("for-two", tenant="t-two"),
        every_minute("for-all", tenant=ALL_ACTIVE),
    )
    tick(clock, scheduler, 0)

    # A tenant sees its own schedules and the each-tenant ones, with its own runs only
    seen = {v.definition.id: v for v in control.list("t-one")}
    assert sorted(seen) == ["for-all", "for-one"]
    assert [r.tenant_id for r in seen["for-all"].history] == ["t-one"]
    assert seen["for-all"].last_invocation_id == seen["for-all"].history[0].invocation.id
    with pytest.raises(ScheduleNotFound):
        control.get("for-two", "t-one")
    with pytest.raises(ScheduleNotFound):
        control.pause("for-two", "t-one")

    # An admin across tenants sees all of it
    everything = {v.definition.id: v for v in control.list(None)}
    assert sorted(everything) == ["for-all", "for-one", "for-two"]
    assert sorted(r.tenant_id for r in everything["for-all"].history) == ["t-one", "t-two"]
    detail = control.get("for-all", None)
    assert len(detail.next_run_times) == 5
    assert detail.next_run_times[0] == utc(2026, 6, 1, 12, 1)
