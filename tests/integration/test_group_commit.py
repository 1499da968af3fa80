"""Group commit under kill -9: a worker killed with batches in flight loses nothing and
runs nothing twice to success (real PostgreSQL, Redis and worker processes)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.integration.conftest import Deployment, Ledger, accept_echoes, worker_pid
from tests.procs import Processes
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

#: A wide window: the committer of a busy worker is nearly always collecting or writing a
#: batch, so the kill lands with one in flight.
WINDOW_MS = 100
COUNT = 400
#: Each run outlasts the gap between seeing the victim's claims and killing it: with runs
#: of 20 ms and batches of 100 ms a fast victim recorded every claim it held in that gap,
#: and died with none in flight (a CI run: `assert lost > 0`).
RUN_S = 0.2


def test_a_worker_killed_with_group_commits_in_flight_loses_nothing_and_runs_nothing_twice(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given a worker of 8 threads whose claims and successes are group-committed
    ledger = ledger_for(deployment.database_url)
    env = deployment.env(group_commit_ms=WINDOW_MS)
    victim = procs.worker(env, name="victim", threads=8)
    ids = accept_echoes(deployment, "t-group", COUNT, sleep_s=RUN_S)

    def victim_busy() -> bool:
        # It holds claims, and there is work left for its batches.
        running = ledger.running_on(ids).values()
        left = COUNT - ledger.count_status(ids, "succeeded")
        return any(worker_pid(w) == victim.pid for w in running) and left > COUNT // 4

    wait_for(victim_busy, timeout=60, what="the victim worker to claim invocations")

    # When it is killed with SIGKILL mid-drain, and another worker takes over
    victim.send(signal.SIGKILL)
    victim.wait(timeout=10)
    survivor = procs.worker(env, name="survivor", threads=8)

    # Then every invocation succeeds (the victim's leases lapse, the sweep sends again)
    wait_for(
        lambda: ledger.count_status(ids, "succeeded") == COUNT,
        timeout=120,
        what=f"all {COUNT} invocations to succeed",
    )
    # each with exactly one successful attempt, its last one
    assert {i: n for i, n in ledger.succeeded_attempts().items() if i in ids} == dict.fromkeys(
        ids, 1
    )
    executions = ledger.executions()
    lost = 0
    for invocation_id in ids:
        attempts = ledger.attempts(invocation_id)
        assert attempts[-1].outcome == "succeeded", attempts
        # Every earlier attempt was the victim's, taken back as lost; a run of the function
        # is always a claimed attempt (a claim may have been won just before the kill,
        # before its function ran).
        for attempt in attempts[:-1]:
            assert attempt.outcome == "lost"
            assert worker_pid(attempt.worker_id or "") == victim.pid
            lost += 1
        assert 1 <= executions[invocation_id] <= len(attempts)
    # The victim held claims when it died: some attempts were lost and ran again.
    assert lost > 0
    assert survivor.alive()
