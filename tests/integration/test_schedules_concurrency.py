"""Several schedulers at once on real PostgreSQL and Redis: every tick fires exactly once.

The schedulers are real threads, each with its own runtime (its own connection pool and
Redis connection), as separate processes would have. Their clock is a fast fake one, so
minutes of ticks pass in seconds; everything else is real. The misfire grace is long,
so the assertions do not depend on how fast this machine is: a tick no scheduler
reached on time still counts as on time, and must still fire exactly once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.scheduling import ALL_ACTIVE, schedule
from runtime.scheduling.definition import ScheduleBook
from runtime.scheduling.loop import SchedulerThread
from runtime.scheduling.scheduler import Scheduler
from tests.integration.conftest import Deployment, Ledger
from tests.procs import Processes
from tests.unit.test_schedules_support import ECHO, FastClock
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
TENANTS = ("t-north", "t-south", "t-east")
#: Long enough that no tick counts as missed, however slow the machine.
GRACE_S = 6 * 3600

each_tenant = schedule(
    "each-tenant",
    cron="* * * * *",
    function="echo",
    input=ECHO,
    tenant=ALL_ACTIVE,
    misfire_grace_s=GRACE_S,
)
prague_even = schedule(
    "prague-even",
    cron="*/2 * * * *",
    timezone="Europe/Prague",
    function="echo",
    input=ECHO,
    tenant="t-north",
    misfire_grace_s=GRACE_S,
)


def fake_start() -> datetime:
    """A day behind the real clock (so a real worker finds every tick due), 50 s into a minute."""
    return (datetime.now(UTC) - DAY).replace(second=50, microsecond=0)


class Fleet:
    """Scheduler threads started and stopped like processes, each with its own runtime."""

    def __init__(self, deployment: Deployment, clock: FastClock) -> None:
        self.deployment = deployment
        self.clock = clock
        self.running: dict[int, tuple[Runtime, SchedulerThread]] = {}
        self.rounds = 0
        self.started = 0

    def scheduler(self, runtime: Runtime) -> Scheduler:
        book = ScheduleBook.of([each_tenant, prague_even], runtime.registry)
        return Scheduler.from_runtime(runtime, book)

    def start(self) -> int:
        runtime = Runtime(self.deployment.settings(), clock=self.clock)
        thread = SchedulerThread(
            self.scheduler(runtime),
            clock=self.clock,
            check_interval_s=0.02,
            name=f"scheduler-{self.started}",
        ).start()
        self.started += 1
        self.running[self.started] = (runtime, thread)
        return self.started

    def stop(self, number: int) -> None:
        runtime, thread = self.running.pop(number)
        thread.stop()
        self.rounds += thread.rounds
        runtime.close()

    def stop_all(self) -> None:
        for number in list(self.running):
            self.stop(number)


@pytest.fixture
def setup(deployment: Deployment) -> Iterator[tuple[Deployment, FastClock, Fleet, Runtime]]:
    clock = FastClock(fake_start(), speed=40)
    admin = Runtime(deployment.settings(), clock=clock)
    for tenant in TENANTS:
        admin.store.tenants.create(tenant)
    # Registered before any scheduler starts: ticks count from the fleet's first moment.
    admin.store.schedules.register(["each-tenant", "prague-even"], clock.start)
    fleet = Fleet(deployment, clock)
    yield deployment, clock, fleet, admin
    fleet.stop_all()
    admin.close()


def expected_keys(start: datetime, end: datetime) -> list[tuple[str, str]]:
    keys = [
        (t, f"schedule:each-tenant:{rfc(tick)}")
        for tick in each_tenant.times.between(start, end)
        for t in TENANTS
    ]
    keys += [
        ("t-north", f"schedule:prague-even:{rfc(tick)}")
        for tick in prague_even.times.between(start, end)
    ]
    return sorted(keys)


def rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def fired_keys(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.store.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT tenant_id, idempotency_key FROM invocations WHERE trigger = 'schedule'")
        )
        return sorted((row.tenant_id, row.idempotency_key) for row in rows)


def run_count(runtime: Runtime) -> int:
    with runtime.store.db.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM schedule_runs")).scalar_one())


def test_two_schedulers_at_once_fire_each_tick_once_and_each_runs_once(
    setup, procs: Processes, ledger_for
) -> None:
    deployment, clock, fleet, admin = setup
    ledger: Ledger = ledger_for(deployment.database_url)
    # Given a worker process and two schedulers running side by side
    procs.worker(deployment.env(), threads=4)
    first, second = fleet.start(), fleet.start()
    threads = [fleet.running[first][1], fleet.running[second][1]]

    # When six minutes of ticks pass
    end_of_test = clock.start + timedelta(minutes=6, seconds=5)
    wait_for(lambda: clock() > end_of_test, timeout=60, what="six fake minutes")
    end = clock.freeze()
    fleet.stop_all()
    fleet.scheduler(admin).fire_due(end)  # whatever the last minute left, if anything

    # Then both were firing all along
    assert all(thread.rounds >= 2 for thread in threads), [t.rounds for t in threads]
    # And every tick, and nothing else, became one invocation per target tenant
    fired = fired_keys(admin)
    assert fired == expected_keys(clock.start, end)
    assert len(fired) >= 6 * 3 + 3
    assert run_count(admin) == len(fired)

    # And the worker ran each of them exactly once
    wait_for(
        lambda: len(ledger.succeeded_attempts()) == len(fired),
        timeout=60,
        what="every scheduled invocation to succeed",
    )
    executions = ledger.executions()
    assert len(executions) == len(fired) and set(executions.values()) == {1}


def test_four_schedulers_started_and_stopped_at_random_for_ten_minutes_of_ticks(setup) -> None:
    _deployment, clock, fleet, admin = setup
    seed = random.randrange(1_000_000)
    chance = random.Random(seed)
    # Given up to four schedulers, started and stopped at random (at times none runs)
    end_of_chaos = clock.start + timedelta(minutes=10)
    changes = 0
    while clock() < end_of_chaos:
        if len(fleet.running) < 4 and (not fleet.running or chance.random() < 0.55):
            fleet.start()
        else:
            fleet.stop(chance.choice(list(fleet.running)))
        changes += 1
        deadline = clock() + timedelta(seconds=chance.uniform(5, 40))
        wait_for(
            lambda d=deadline: clock() >= d,
            timeout=30,
            interval=0.01,
            what="the fake clock to move on",
        )

    # When the clock stops and one more scheduler has had a look
    end = clock.freeze()
    fleet.stop_all()
    fleet.scheduler(admin).fire_due(end)

    # Then every tick of the ten minutes fired exactly once, whoever was running
    fired = fired_keys(admin)
    assert fired == expected_keys(clock.start, end), f"seed {seed}"
    assert len(fired) >= 10 * 3 + 5
    assert run_count(admin) == len(fired)
    assert fleet.started >= 4 and changes >= 10, f"seed {seed}"
    assert fleet.rounds > 0
