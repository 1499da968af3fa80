"""Nothing accepted is lost: a worker killed mid-run; Redis down under 200 accepts, then back empty."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from tests.conftest import REDIS_URL
from tests.integration.clients import Client, make_key
from tests.integration.conftest import (
    FAST_RECOVERY,
    Deployment,
    Ledger,
    accept_echoes,
    worker_pid,
)
from tests.procs import PrivateRedis, Processes, free_port, timed
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

#: Invocations accepted while Redis is down.
OUTAGE_BURST = 200


def test_a_worker_killed_mid_run_loses_nothing_and_runs_nothing_twice(
    deployment: Deployment, procs: Processes, ledger_for: Callable[[str], Ledger]
) -> None:
    # Given 3 workers running 20 slow invocations
    ledger = ledger_for(deployment.database_url)
    env = deployment.env()
    workers = [procs.worker(env, name=f"worker-{n}", threads=3) for n in range(3)]
    ids = accept_echoes(deployment, "t-kill", 20, sleep_s=4)
    victim = workers[0]

    def victim_running() -> dict[str, str]:
        return {i: w for i, w in ledger.running_on(ids).items() if worker_pid(w) == victim.pid}

    held = wait_for(victim_running, what="the victim worker to run invocations")
    victim_id = next(iter(held.values()))
    # Mid-run: the bodies of what it holds have begun (each counts itself first)
    wait_for(
        lambda: all(ledger.executions().get(i, 0) >= 1 for i in held),
        what="the victim's functions to start",
    )
    held = victim_running()

    # When that worker is killed with SIGKILL in the middle of its attempts
    victim.send(signal.SIGKILL)
    victim.wait(timeout=10)

    # Then every invocation succeeds on the others (once the victim's 3 s leases lapse),
    # each with exactly one successful attempt
    wait_for(
        lambda: ledger.count_status(ids, "succeeded") == 20,
        timeout=120,
        what="all 20 invocations to succeed",
    )
    assert {i: n for i, n in ledger.succeeded_attempts().items() if i in ids} == dict.fromkeys(
        ids, 1
    )
    executions = ledger.executions()
    lost = []
    for invocation_id in ids:
        attempts = ledger.attempts(invocation_id)
        # Every run of the function is a claimed attempt: nothing ran unrecorded. (One the
        # victim claimed just before the kill may have died before its body began.)
        assert 1 <= executions[invocation_id] <= len(attempts)
        assert attempts[-1].outcome == "succeeded"
        assert attempts[-1].worker_id != victim_id
        for attempt in attempts[:-1]:
            assert attempt.outcome == "lost"
            assert attempt.worker_id == victim_id
            lost.append(invocation_id)
    # The attempts the victim held when it died are recorded as lost (and, above, only the
    # victim's are: one it claimed after `held` was read may be among them)
    assert set(held) <= set(lost)
    assert all(w.alive() for w in workers[1:])


def test_a_worker_killed_mid_run_of_a_600_s_function_runs_it_again_within_a_minute(
    pg_database: str,
    redis_namespace: str,
    procs: Processes,
    ledger_for: Callable[[str], Ledger],
) -> None:
    # Given two workers with the default lease, heartbeat and sweep settings, and one of
    # them running an invocation of a function whose timeout is 600 s
    deployment = Deployment(pg_database, REDIS_URL, redis_namespace, {"log_level": "info"})
    ledger = ledger_for(pg_database)
    env = deployment.env()
    workers = [procs.worker(env, name=f"worker-{n}", threads=1) for n in range(2)]
    runtime = deployment.runtime()
    try:
        runtime.store.tenants.create("t-long")
        invocation_id = runtime.invocations.accept(
            tenant_id="t-long", function="unhurried", payload={"message": "m", "sleep_s": 3}
        )[0].id
    finally:
        runtime.close()
    wait_for(lambda: invocation_id in ledger.executions(), what="the function running")
    holder = ledger.running_on([invocation_id])
    [victim] = [w for w in workers if w.pid == worker_pid(holder[invocation_id])]
    [survivor] = [w for w in workers if w is not victim]

    # When that worker is killed with SIGKILL mid-run
    with timed() as recovery:
        victim.send(signal.SIGKILL)
        victim.wait(timeout=10)
        # Then the other worker runs it again and it succeeds within a minute (its lease
        # lapses, or the heartbeat finds the worker lost), not after the 600 s timeout
        wait_for(
            lambda: ledger.count_status([invocation_id], "succeeded") == 1,
            timeout=60,
            interval=0.2,
            what="the invocation to run again and succeed",
        )
    print(f"kill -9 to success elsewhere: {recovery[0]:.1f} s (function runs 3 s)")
    attempts = [(a.outcome, worker_pid(a.worker_id or "")) for a in ledger.attempts(invocation_id)]
    assert attempts == [("lost", victim.pid), ("succeeded", survivor.pid)]
    assert ledger.executions()[invocation_id] == 2


def test_redis_down_while_200_are_accepted_then_restarted_empty_loses_nothing(
    pg_database: str,
    redis_namespace: str,
    private_redis: PrivateRedis,
    procs: Processes,
    ledger_for: Callable[[str], Ledger],
) -> None:
    # Given 500 invocations accepted over HTTP, 100 of them delayed, and no worker yet
    deployment = Deployment(pg_database, private_redis.url, redis_namespace, dict(FAST_RECOVERY))
    ledger = ledger_for(pg_database)
    port = free_port()
    client = Client(f"http://127.0.0.1:{port}", make_key(pg_database, "t-flush"))
    procs.gunicorn(deployment.env(), port=port, workers=2, threads=4)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(
            pool.map(
                lambda n: client.invoke(
                    "echo", {"message": f"m{n}"}, params={"delay": "2"} if n % 5 == 0 else None
                ),
                range(500),
            )
        )
    assert [r.status_code for r in responses] == [202] * 500
    ids = [r.json()["id"] for r in responses]
    assert sorted(ledger.statuses(ids).values()) == ["queued"] * 400 + ["scheduled"] * 100
    # and the broker holds every queued one the store marked as sent (fair dispatch holds
    # the rest of the tenant's backlog in the store, beyond its window: docs/fairness.md)
    queued = [i for i, status in ledger.statuses(ids).items() if status == "queued"]
    sent = ledger.sent(queued)
    assert 0 < sent <= 400
    broker = redis.Redis.from_url(private_redis.url)
    assert broker.llen(f"{redis_namespace}:default") == sent
    broker.close()

    # When Redis dies while 200 more invocations come in (it is killed after the 50th
    # answer, so some sends are in flight): the gateway accepts every one the store
    # commits (202), for the sweep to send once Redis is back
    answered = threading.Semaphore(0)

    def invoke(n: int) -> requests.Response:
        try:
            return client.invoke("echo", {"message": f"during the outage {n}"})
        finally:
            answered.release()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        pending = [pool.submit(invoke, n) for n in range(OUTAGE_BURST)]
        for _ in range(50):
            assert answered.acquire(timeout=60), "the first 50 answers"
        private_redis.kill()
        # /readyz stays 200 meanwhile, since the gateway still accepts, and says the
        # broker is down
        ready = client.readyz()
        during = [future.result() for future in pending]
    slowest = max(r.elapsed.total_seconds() for r in during)
    print(
        f"\nredis outage: {OUTAGE_BURST} accepts in {time.monotonic() - started:.2f} s, "
        f"slowest {slowest:.3f} s, {sum(r.status_code == 202 for r in during)} answered 202"
    )
    assert [r.status_code for r in during] == [202] * OUTAGE_BURST, {
        r.status_code: r.text for r in during if r.status_code != 202
    }
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["broker"].startswith("unavailable"), ready.text
    assert ready.json()["checks"]["store"] == "ok"
    outage_ids = [r.json()["id"] for r in during]
    ids += outage_ids
    assert set(ledger.statuses(outage_ids).values()) == {"queued"}
    assert ledger.total() == 500 + OUTAGE_BURST
    still = client.readyz()
    assert still.status_code == 200 and still.json()["checks"]["broker"].startswith("unavailable")

    # And Redis comes back empty
    private_redis.start()
    broker = redis.Redis.from_url(private_redis.url)
    assert broker.dbsize() == 0
    broker.close()
    wait_for(lambda: client.readyz().json()["checks"]["broker"] == "ok", what="/readyz: broker ok")

    # And workers start
    env = deployment.env()
    procs.worker(env, name="worker-a", threads=8)
    procs.worker(env, name="worker-b", threads=8)

    # Then all 700 run, each exactly once
    wait_for(
        lambda: ledger.count_status(ids, "succeeded") == len(ids),
        timeout=180,
        interval=0.5,
        what="all 700 invocations to succeed",
    )
    executions = ledger.executions()
    assert {i: executions.get(i) for i in ids} == dict.fromkeys(ids, 1)
    assert ledger.succeeded_attempts() == dict.fromkeys(ids, 1)
