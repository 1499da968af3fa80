"""The worker process: start-up checks, graceful SIGTERM, and a second signal."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.conftest import Deployment, Ledger, accept_echoes, worker_pid
from tests.procs import PYTHON, REPO, Processes, child_env
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def test_sigterm_finishes_running_invocations_and_exits_zero(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given a worker with 2 threads running 2 of 4 slow invocations
    ledger = ledger_for(deployment.database_url)
    env = deployment.env(shutdown_grace_s=60)
    worker = procs.worker(env, threads=2)
    ids = accept_echoes(deployment, "t-term", 4, sleep_s=4)

    def two_running() -> list[str]:
        running = ledger.running_on(ids)
        return list(running) if len(running) == 2 else []

    running = wait_for(two_running, what="two invocations running")
    waiting = [i for i in ids if i not in running]

    # When it gets SIGTERM mid-run
    worker.send(signal.SIGTERM)

    # Then it finishes what it runs and exits 0, without starting the waiting ones
    assert worker.wait(timeout=60) == 0
    assert ledger.statuses(running) == dict.fromkeys(running, "succeeded")
    assert ledger.executions().keys() >= set(running)
    assert all(ledger.executions()[i] == 1 for i in running)
    assert not set(waiting) & ledger.executions().keys()
    assert '"worker_stopped"' in worker.output()
    assert "worker_stopped_with_running_attempts" not in worker.output()

    # And the next worker runs the ones it left
    procs.worker(env, name="worker-2", threads=2)
    wait_for(
        lambda: ledger.count_status(waiting, "succeeded") == 2,
        timeout=60,
        what="left-over invocations to succeed",
    )


def test_grace_runs_out_and_the_worker_still_exits_zero(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given a worker whose grace (1 s) is shorter than its running invocation (30 s)
    ledger = ledger_for(deployment.database_url)
    worker = procs.worker(deployment.env(shutdown_grace_s=1), threads=1)
    ids = accept_echoes(deployment, "t-grace", 1, sleep_s=30)
    wait_for(lambda: ledger.running_on(ids), what="the invocation running")

    # When it gets SIGTERM
    worker.send(signal.SIGTERM)

    # Then it gives up on the attempt after the grace, says so, and exits 0; the
    # invocation is still running, but its lease ended, for another worker to reclaim now.
    assert worker.wait(timeout=25) == 0
    assert "worker_stopped_with_running_attempts" in worker.output()
    assert ledger.statuses(ids) == {ids[0]: "running"}
    lease = ledger.store.invocations.get(ids[0]).lease_expires_at
    assert lease is not None and lease <= datetime.now(UTC)


def test_a_second_signal_exits_at_once(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given a worker draining a 30 s invocation after a first SIGTERM
    ledger = ledger_for(deployment.database_url)
    worker = procs.worker(deployment.env(shutdown_grace_s=60), threads=1)
    ids = accept_echoes(deployment, "t-twice", 1, sleep_s=30)
    wait_for(lambda: ledger.running_on(ids), what="the invocation running")
    worker.send(signal.SIGTERM)
    worker.wait_for_output('"worker_stopping"')

    # When a second signal comes
    worker.send(signal.SIGINT)

    # Then it leaves without finishing, with 128 + SIGINT
    assert worker.wait(timeout=20) == 128 + signal.SIGINT
    assert "second SIGINT, exiting now" in worker.output()
    running = ledger.running_on(ids)
    assert worker_pid(running[ids[0]]) == worker.pid


def test_sweeper_in_the_worker_reclaims_an_abandoned_attempt(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given an attempt left running by a worker that gave up on it at shutdown
    ledger = ledger_for(deployment.database_url)
    first = procs.worker(deployment.env(shutdown_grace_s=0), name="first", threads=1)
    ids = accept_echoes(deployment, "t-left", 1, sleep_s=2)
    wait_for(lambda: ledger.running_on(ids), what="the invocation running")
    first.send(signal.SIGTERM)
    assert first.wait(timeout=25) == 0

    # When another worker runs (its sweeper finds the lease the first one released)
    procs.worker(deployment.env(), name="second", threads=1)

    # Then the invocation succeeds there, and the first attempt is recorded as lost
    wait_for(
        lambda: ledger.count_status(ids, "succeeded") == 1,
        timeout=90,
        what="the abandoned invocation to succeed elsewhere",
    )
    outcomes = [a.outcome for a in ledger.attempts(ids[0])]
    assert outcomes == ["lost", "succeeded"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--queues", "default,nope"], {}, "unknown queues"),
        (["--threads", "0"], {}, "--threads must be at least 1"),
        ([], {"worker_threads": "0"}, "FERRY_WORKER_THREADS"),
        ([], {"broker_url": "amqp://x"}, "FERRY_BROKER_URL"),
    ],
)
def test_the_worker_refuses_to_start_with_a_bad_configuration(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    # Given an embedded store (no server needed to refuse)
    environment = child_env(database_url=f"sqlite:///{tmp_path}/f.db", **env)

    # When the worker starts with a bad option or setting
    done = subprocess.run(
        [PYTHON, "-m", "runtime.worker", *args],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then it exits 2 naming the problem
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
