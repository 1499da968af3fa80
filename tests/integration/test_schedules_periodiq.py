"""The Procfile's `scheduler` process for real: periodiq processes on the real clock.

Two `periodiq runtime.scheduling.periodiq_entry:boot` processes and a worker process
run against real PostgreSQL and Redis for at least two minute ticks; one scheduler is
SIGKILLed and started again on the way. Every minute must become exactly one
invocation, run once. This waits for real minutes (up to about three); the same
properties are driven quickly with an injected clock in `test_schedules_concurrency`.

The schedule under test is declared here (FERRY_SCHEDULES_MODULE points at this module).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime.scheduling import schedule
from tests.integration.conftest import Deployment, Ledger
from tests.procs import Proc, Processes
from tests.unit.test_schedules_support import ECHO, tick_keys
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

PERIODIQ = str(Path(sys.executable).parent / "periodiq")
ENTRY = "runtime.scheduling.periodiq_entry:boot"

clock_minute = schedule(
    "clock-minute", cron="* * * * *", function="echo", input=ECHO, tenant="t-clock"
)


def scheduler(procs: Processes, env: dict[str, str], name: str) -> Proc:
    proc = procs.start(name, [PERIODIQ, ENTRY], env)
    proc.wait_for_output('"scheduler_tick"', timeout=60)  # periodiq fires once at start
    return proc


def test_two_periodiq_schedulers_fire_each_minute_once_through_a_kill(
    deployment: Deployment, procs: Processes, ledger_for
) -> None:
    ledger: Ledger = ledger_for(deployment.database_url)
    runtime = deployment.runtime()
    runtime.store.tenants.create("t-clock")
    states = runtime.store.schedules
    env = deployment.env(schedules_module=__name__)

    # Given a worker and two scheduler processes
    procs.worker(env)
    first = scheduler(procs, env, "scheduler-1")
    second = scheduler(procs, env, "scheduler-2")
    registered_at = states.states()["clock-minute"].created_at

    # When a minute has fired, one scheduler is killed and started again, and one more
    # minute passes
    wait_for(
        lambda: len(tick_keys(runtime, "clock-minute")) >= 1,
        timeout=100,
        what="the first minute tick",
    )
    first.kill_group()
    restarted = scheduler(procs, env, "scheduler-1-again")
    wait_for(
        lambda: len(tick_keys(runtime, "clock-minute")) >= 2,
        timeout=100,
        what="the second minute tick",
    )
    # The scheduler that lived throughout logs its decision at that minute once its tick
    # is done, which may be just after the tick's invocation is stored: wait for the line
    # rather than kill it in between (the assertion below is about it).
    wait_for(
        lambda: second.output().count('"scheduler_tick"') >= 2,
        timeout=30,
        what="the living scheduler's decision at the second minute",
    )
    second.kill_group()
    restarted.kill_group()

    # Then every minute from registration to the last one fired is one invocation: none
    # missing, none twice. (A scheduler killed between accepting a tick and moving the
    # cursor leaves the cursor a minute behind; the next one would re-fire it as a no-op.)
    fired = [key for _, key in tick_keys(runtime, "clock-minute")]
    last_tick = states.states()["clock-minute"].last_tick_at
    last_fired = datetime.strptime(
        fired[-1].removeprefix("schedule:clock-minute:"), "%Y-%m-%dT%H:%M:%S.%fZ"
    ).replace(tzinfo=UTC)
    assert last_fired - timedelta(minutes=1) <= last_tick <= last_fired
    expected = [
        f"schedule:clock-minute:{tick.strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
        for tick in clock_minute.times.between(registered_at, max(last_tick, last_fired))
    ]
    assert fired == expected
    assert len(expected) >= 2
    # And the scheduler that lived throughout decided at the minute ticks too, not only
    # at its start
    assert second.output().count('"scheduler_tick"') >= 2
    # And each invocation ran once
    wait_for(
        lambda: len(ledger.succeeded_attempts()) == len(expected),
        timeout=60,
        what="the minute invocations to succeed",
    )
    assert set(ledger.executions().values()) == {1}
    runtime.close()
