"""Firing ticks into invocations: keys, restarts, downtime, tenants, time zones, lateness.

Each test runs on the embedded store and broker and on real PostgreSQL and Redis
(`backend`); the clock is injected, so ticks are driven without waiting for minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.scheduling import ALL_ACTIVE, schedule
from runtime.scheduling.scheduler import Scheduler
from runtime.store import models
from runtime.store.models import TenantStatus
from tests.conftest import prepare
from tests.unit.conftest import closed_port
from tests.unit.test_schedules_support import (
    ECHO,
    FakeClock,
    every_minute,
    scheduler_for,
    state_of,
    tick_keys,
    utc,
)
from tests.waiting import wait_for

START = utc(2026, 5, 4, 9, 59, 30)
KEY_1000 = "schedule:every-minute:2026-05-04T10:00:00.000Z"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def build(backend, settings_for, clock) -> Iterator[Callable[..., Runtime]]:
    """Runtimes on this test's store with the fake clock; each build is a process restart."""
    built: list[Runtime] = []

    def make(**overrides) -> Runtime:
        runtime = prepare(Runtime(settings_for(backend, **overrides), clock=clock))
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


@pytest.fixture
def rt(build) -> Runtime:
    runtime = build()
    runtime.store.tenants.create("t-one")
    return runtime


def started(runtime: Runtime, *definitions) -> Scheduler:
    """A scheduler process starting now: it registers its schedules."""
    scheduler = scheduler_for(runtime, *definitions)
    scheduler.register()
    return scheduler


def at(clock: FakeClock, hour: int, minute: int, second: float = 0.003) -> None:
    """Move the clock to 2026-05-04 hour:minute:second UTC."""
    clock.set(utc(2026, 5, 4, hour, minute) + timedelta(seconds=second))


def invocations_of(runtime: Runtime, schedule_id: str) -> list:
    views, _ = runtime.store.invocations.list(None, limit=200)
    return sorted(
        (v for v in views if v.idempotency_key.startswith(f"schedule:{schedule_id}:")),
        key=lambda v: (v.scheduled_for, v.tenant_id),
    )


def test_each_tick_becomes_one_invocation_keyed_by_schedule_and_tick(rt, clock):
    # Given a schedule registered at 09:59:30
    scheduler = started(rt, every_minute())

    # When the clock reaches 10:00 and the scheduler fires, twice in that minute
    at(clock, 10, 0)
    first = scheduler.fire_due()
    at(clock, 10, 0, 40)
    again = scheduler.fire_due()

    # Then one invocation, through the same path as HTTP: stored, queued, keyed
    [fired] = first.created
    assert again.fired == []
    invocation = rt.store.invocations.get(fired.invocation_id)
    assert (invocation.trigger, invocation.function, invocation.tenant_id) == (
        "schedule",
        "echo",
        "t-one",
    )
    assert invocation.idempotency_key == KEY_1000
    assert invocation.scheduled_for == utc(2026, 5, 4, 10, 0)
    assert invocation.payload == {**ECHO, "sleep_s": 0.0}
    assert invocation.status == "queued"
    state = state_of(rt, "every-minute")
    assert state.last_tick_at == utc(2026, 5, 4, 10, 0)
    assert state.last_invocation_id == invocation.id
    assert state.last_run_at == first.now

    # And the next minute makes the next one
    at(clock, 10, 1)
    assert len(scheduler.fire_due().created) == 1
    assert [k for _, k in tick_keys(rt, "every-minute")] == [
        KEY_1000,
        "schedule:every-minute:2026-05-04T10:01:00.000Z",
    ]


def test_a_scheduler_restarted_in_a_minute_it_fired_does_not_fire_it_again(build, rt, clock):
    # Given a scheduler that fired 10:00
    first = started(rt, every_minute())
    at(clock, 10, 0)
    assert len(first.fire_due().created) == 1
    rt.close()

    # When a new process starts at 10:00:30 (periodiq fires at start-up)
    at(clock, 10, 0, 30)
    restarted = build()
    scheduler = started(restarted, every_minute())
    report = scheduler.fire_due()

    # Then it does not even try: the store's cursor says 10:00 is done
    assert report.fired == []
    assert len(tick_keys(restarted, "every-minute")) == 1

    # And had the first process died before moving the cursor, the key makes it a no-op
    with restarted.store.db.session() as s:
        s.execute(sa.update(models.ScheduleState).values(last_tick_at=START))
    [refired] = scheduler.fire_due().fired
    assert refired.created is False
    assert len(tick_keys(restarted, "every-minute")) == 1
    assert len(restarted.store.schedules.runs("every-minute", None, limit=10)) == 1


@pytest.mark.parametrize(("policy", "catch_up"), [("skip", 0), ("run_once", 1)])
def test_a_scheduler_down_across_three_ticks(build, rt, clock, policy, catch_up):
    definition = every_minute(misfire=policy, misfire_grace_s=30)
    # Given 10:00 fired, then no scheduler during 10:01, 10:02 and 10:03
    first = started(rt, definition)
    at(clock, 10, 0)
    assert len(first.fire_due().created) == 1
    rt.close()

    # When one starts again at 10:03:40, every missed tick more than 30 s late
    at(clock, 10, 3, 40)
    back = build()
    scheduler = started(back, definition)
    report = scheduler.fire_due()

    # Then skip fires none of them and run_once fires one, for the last missed tick
    assert len(report.created) == catch_up
    assert report.passed_over == {"every-minute": "missed"}
    invocations = invocations_of(back, "every-minute")
    assert len(invocations) == 1 + catch_up
    if catch_up:
        assert invocations[-1].scheduled_for == utc(2026, 5, 4, 10, 3)  # its lateness shows

    # And the next tick fires normally, once
    at(clock, 10, 4)
    assert len(scheduler.fire_due().created) == 1
    assert len(invocations_of(back, "every-minute")) == 2 + catch_up


def test_each_active_tenant_gets_its_own_invocation_per_tick_run_as_that_tenant(rt, clock):
    # Given three more active tenants and a suspended one
    for tenant in ("t-a", "t-b", "t-c", "t-off"):
        rt.store.tenants.create(tenant)
    rt.store.tenants.set_status("t-off", TenantStatus.SUSPENDED)
    scheduler = started(rt, every_minute("everyone", tenant=ALL_ACTIVE))

    # When two ticks fire
    for minute in (0, 1):
        at(clock, 10, minute)
        scheduler.fire_due()

    # Then one invocation per active tenant per tick, none for the suspended one
    active = ["t-a", "t-b", "t-c", "t-one"]
    keys = tick_keys(rt, "everyone")
    assert sorted(keys) == sorted(
        (tenant, f"schedule:everyone:2026-05-04T10:0{m}:00.000Z")
        for tenant in active
        for m in (0, 1)
    )

    # And each runs in its own tenant's context
    worker = rt.start_worker()
    try:
        invocations = wait_for(
            lambda: (
                (found := invocations_of(rt, "everyone"))
                and all(i.status == "succeeded" for i in found)
                and found
            ),
            what="the tenants' invocations to succeed",
        )
    finally:
        worker.stop(grace_s=5)
    assert len(invocations) == 8
    assert all(i.result["tenant_id"] == i.tenant_id for i in invocations)
    # And each tenant's run history holds its own runs only
    runs = rt.store.schedules.runs("everyone", "t-b", limit=10)
    assert [r.tenant_id for r in runs] == ["t-b", "t-b"]


def test_a_daily_0230_prague_schedule_fires_once_on_both_change_days(rt, clock):
    definition = schedule(
        "prague-night",
        cron="30 2 * * *",
        timezone="Europe/Prague",
        function="echo",
        input=ECHO,
        tenant="t-one",
    )
    scheduler = scheduler_for(rt, definition)
    for first_day in (utc(2026, 3, 28), utc(2026, 10, 24)):
        # Given the schedule registered the day before a change
        clock.set(first_day)
        scheduler.register()
        # When a scheduler looks every 30 minutes for two days
        for half_hour in range(1, 2 * 48 + 1):
            clock.set(first_day + timedelta(minutes=30 * half_hour))
            scheduler.fire_due()
    # Then it fired once on each local day, at 02:30, or 03:00 where 02:30 did not exist
    assert [k for _, k in tick_keys(rt, "prague-night")] == [
        "schedule:prague-night:2026-03-28T01:30:00.000Z",  # 02:30 CET
        "schedule:prague-night:2026-03-29T01:00:00.000Z",  # 03:00 CEST (spring forward)
        "schedule:prague-night:2026-10-24T00:30:00.000Z",  # 02:30 CEST
        "schedule:prague-night:2026-10-25T00:30:00.000Z",  # the first 02:30 (fall back)
    ]


def test_a_tick_that_reaches_a_worker_late_still_runs_and_shows_its_lateness(rt, clock):
    # Given a tick fired at 10:00 while no worker runs
    scheduler = started(rt, every_minute())
    at(clock, 10, 0)
    [fired] = scheduler.fire_due().created

    # When a worker gets to it seven minutes later
    at(clock, 10, 7, 0)
    worker = rt.start_worker()
    try:
        done = wait_for(
            lambda: (i := rt.store.invocations.get(fired.invocation_id)).finished and i,
            what="the late tick's invocation to finish",
        )
    finally:
        worker.stop(grace_s=5)

    # Then it ran (nothing skipped it), and the lateness is on the invocation
    assert done.status == "succeeded"
    assert done.started_at - done.scheduled_for == timedelta(minutes=7)
    [run] = rt.store.schedules.runs("every-minute", None, limit=5)
    assert run.lateness_ms == 7 * 60 * 1000


def test_an_unreachable_broker_still_fires_the_tick_and_the_sweep_sends_it(build, rt, clock):
    # Given a scheduler whose broker does not answer
    cut_off = build(broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    scheduler = started(cut_off, every_minute())
    at(clock, 10, 0)
    report = scheduler.fire_due()

    # Then the tick fires all the same: its invocation is committed, the cursor moves on
    [fired] = report.created
    assert report.failed == [] and fired.tick_at == utc(2026, 5, 4, 10, 0)
    assert [k for _, k in tick_keys(rt, "every-minute")] == [KEY_1000]
    assert state_of(rt, "every-minute").last_tick_at == utc(2026, 5, 4, 10, 0)

    # When a scheduler with a working broker looks a little later (within the grace)
    at(clock, 10, 0, 20)
    # Then it fires nothing again, and the sweep sends the invocation the broker missed
    assert scheduler_for(rt, every_minute()).fire_due().created == []
    assert [k for _, k in tick_keys(rt, "every-minute")] == [KEY_1000]
    assert rt.sweep().sent == 1
