"""Short leases: renewed while an attempt runs, not past its timeout, released when its worker goes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from runtime.app import Runtime
from runtime.metrics import Metrics
from runtime.recovery.heartbeat import Heartbeat, HeartbeatOptions
from runtime.recovery.leases import LeaseKeeper, LeaseOptions, timeouts
from runtime.store.claims import Claimed
from tests.conftest import executions
from tests.waiting import finished, wait_for

HEARTBEAT = HeartbeatOptions(interval_s=5, stale_after_s=30, retention_s=3600)


def keeper(
    runtime: Runtime,
    worker_id: str,
    *,
    lease_s: float,
    grace_s: float,
    metrics: Metrics | None = None,
) -> LeaseKeeper:
    """A lease keeper the test renews by hand (its thread is not started)."""
    return LeaseKeeper(
        runtime.store.leases,
        worker_id,
        timeout_s=timeouts(runtime.registry, runtime.settings),
        options=LeaseOptions(lease_s=lease_s, grace_s=grace_s),
        metrics=metrics,
    )


def run_on(runtime: Runtime, leases: LeaseKeeper, tenant: str, function: str = "echo") -> Claimed:
    """Accept an invocation and claim it for `leases`'s worker, as the claim middleware does."""
    payload = {"message": "x"} if function == "echo" else {"seconds": 0}
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function=function, payload=payload)
    claimed = runtime.store.claims.claim(inv.id, leases.worker_id, leases.options.lease_s)
    assert isinstance(claimed, Claimed)
    assert leases.hold(claimed)
    return claimed


def lease_of(runtime: Runtime, claimed: Claimed) -> datetime | None:
    return runtime.store.invocations.get(claimed.invocation.id).lease_expires_at


def key(claimed: Claimed) -> tuple[str, int]:
    return (claimed.invocation.id, claimed.attempt)


def outcomes(runtime: Runtime, invocation_id: str) -> list[tuple[str | None, str | None]]:
    return [(a.outcome, a.worker_id) for a in runtime.store.invocations.attempts(invocation_id)]


def test_a_running_attempt_keeps_its_lease_while_its_worker_renews_it(clocked, clock):
    # Given two attempts claimed with a 10 s lease, one on a worker that renews, one on a
    # worker that died
    tenant = clocked.store.tenants.create("t-renew").id
    alive = keeper(clocked, "alive", lease_s=10, grace_s=5)
    dead = keeper(clocked, "dead", lease_s=10, grace_s=5)
    renewed, abandoned = run_on(clocked, alive, tenant), run_on(clocked, dead, tenant)
    assert lease_of(clocked, renewed) == clock.now + timedelta(seconds=10)
    # When the live worker renews every 8 s (echo's timeout is 20 s)
    for _ in range(2):
        clock.advance(8)
        assert alive.renew_once() == {key(renewed)}
        assert lease_of(clocked, renewed) == clock.now + timedelta(seconds=10)
    # Then, 16 s in, the sweep takes back only the attempt nobody renewed
    assert clocked.store.sweep.reclaim_lost() == [abandoned.invocation.id]
    assert clocked.store.invocations.get(renewed.invocation.id).status == "running"


def test_an_attempt_past_its_timeout_is_not_renewed_and_is_taken_back(clocked, clock):
    # Given an echo attempt (timeout 20 s) and a 5 s grace: renewed up to 25 s after its claim
    tenant = clocked.store.tenants.create("t-stuck").id
    leases = keeper(clocked, "w", lease_s=10, grace_s=5)
    stuck = run_on(clocked, leases, tenant)
    for _ in range(3):
        clock.advance(8)
        assert leases.renew_once() == {key(stuck)}
    last_lease = lease_of(clocked, stuck)
    # and a later attempt, still within its timeout
    clock.advance(1)  # 25 s
    fresh = run_on(clocked, leases, tenant)
    # When the time limit failed to stop it and the worker renews past 25 s
    clock.advance(7)  # 32 s
    assert leases.renew_once() == {key(fresh)}
    # Then its lease is left to lapse, and the sweep takes the attempt back once it has
    assert lease_of(clocked, stuck) == last_lease
    assert clocked.store.sweep.reclaim_lost() == []
    clock.advance(3)  # past last_lease (34 s)
    assert clocked.store.sweep.reclaim_lost() == [stuck.invocation.id]
    assert outcomes(clocked, stuck.invocation.id) == [("lost", "w")]
    # and it is not renewed any more, while the later attempt still is
    assert leases.renew_once() == {key(fresh)}


def test_renewals_lapses_and_releases_are_counted(clocked, clock):
    # Given a worker with two attempts (echo: timeout 20 s, grace 1 s), counting into its
    # own registry
    registry = CollectorRegistry()
    tenant = clocked.store.tenants.create("t-count").id
    leases = keeper(clocked, "w", lease_s=10, grace_s=1, metrics=Metrics(registry=registry))
    run_on(clocked, leases, tenant), run_on(clocked, leases, tenant)
    # When it renews at 8 s and 16 s, then at 22 s (past timeout + grace, the leases still
    # valid until 26 s), then stops
    for step in (8, 8, 6):
        clock.advance(step)
        leases.renew_once()
    assert leases.release_all() == 2
    # Then two renewals per round before the timeout, two lapses, two releases
    figure = registry.get_sample_value
    assert figure("ferry_lease_renewals_total") == 4
    assert figure("ferry_lease_lapses_total") == 2
    assert figure("ferry_leases_released_total") == 2


def test_a_renewal_never_revives_a_lease_that_ended(clocked, clock):
    # Given an attempt whose worker could not renew in time: its lease lapsed
    tenant = clocked.store.tenants.create("t-late").id
    leases = keeper(clocked, "late", lease_s=10, grace_s=5)
    claimed = run_on(clocked, leases, tenant)
    clock.advance(11)
    lapsed = lease_of(clocked, claimed)
    # When the worker renews late, before any sweep
    # Then the lapsed lease stays lapsed, and the sweep takes the attempt back
    assert leases.renew_once() == set()
    assert lease_of(clocked, claimed) == lapsed
    assert clocked.store.sweep.reclaim_lost() == [claimed.invocation.id]
    # And once another worker claimed it again, no renewal of the old attempt touches it
    again = clocked.store.claims.claim(claimed.invocation.id, "other", lease_s=10)
    assert isinstance(again, Claimed) and again.attempt == 2
    lease = lease_of(clocked, again)
    clock.advance(1)
    assert clocked.store.leases.renew("late", [key(claimed)], 60) == set()
    assert clocked.store.leases.renew("late", [key(again)], 60) == set()
    assert clocked.store.leases.renew("other", [key(claimed)], 60) == set()
    assert lease_of(clocked, again) == lease
    # but the new holder renews its own
    assert clocked.store.leases.renew("other", [key(again)], 60) == {key(again)}


@pytest.fixture
def beating(clocked: Runtime) -> Iterator[Callable[..., Heartbeat]]:
    """Register worker heartbeats the test beats by hand; stopped afterwards."""
    started: list[Heartbeat] = []

    def register(worker_id: str, *, hostname: str, pid: int) -> Heartbeat:
        heartbeat = _heartbeat(clocked, worker_id, hostname=hostname, pid=pid)
        started.append(heartbeat)
        return heartbeat

    yield register
    for heartbeat in started:
        heartbeat.stop()


def _heartbeat(runtime: Runtime, worker_id: str, *, hostname: str, pid: int) -> Heartbeat:
    heartbeat = Heartbeat(
        runtime.store.workers,
        worker_id,
        queues=["default"],
        threads=1,
        options=HEARTBEAT,
        hostname=hostname,
        pid=pid,
    )
    heartbeat.register()
    return heartbeat


def test_a_worker_found_lost_releases_its_attempts_at_once(clocked, clock, beating):
    # Given a worker running an attempt under a long lease (600 s), and another worker
    tenant = clocked.store.tenants.create("t-lost").id
    silent = beating("host-a:1:aaa", hostname="host-a", pid=1)
    survivor = beating("host-b:2:bbb", hostname="host-b", pid=2)
    held = run_on(clocked, keeper(clocked, silent.worker_id, lease_s=600, grace_s=5), tenant)
    kept = run_on(clocked, keeper(clocked, survivor.worker_id, lease_s=600, grace_s=5), tenant)
    # When the first stops beating for longer than the stale threshold
    clock.advance(HEARTBEAT.stale_after_s + 1)
    survivor.beat_once()
    # Then its lease ends at the moment it is found lost, and the next sweep takes the
    # attempt back; the other worker's lease is untouched
    assert lease_of(clocked, held) == clock.now
    assert lease_of(clocked, kept) == kept.invocation.started_at + timedelta(seconds=600)
    clock.advance(1)
    assert clocked.store.sweep.reclaim_lost() == [held.invocation.id]
    assert outcomes(clocked, held.invocation.id) == [("lost", silent.worker_id)]
    assert clocked.store.invocations.get(kept.invocation.id).status == "running"


def test_a_restarted_worker_releases_its_dead_predecessors_attempts(clocked, clock, beating):
    # Given an attempt of a worker of this host whose process has exited
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    tenant = clocked.store.tenants.create("t-restart").id
    clocked.store.workers.register(
        "host-a:dead", hostname="host-a", pid=int(dead.stdout), queues=["default"], threads=1
    )
    held = run_on(clocked, keeper(clocked, "host-a:dead", lease_s=600, grace_s=5), tenant)
    clock.advance(2 * HEARTBEAT.interval_s + 1)  # quiet, far from stale
    # When a new worker starts on the host
    beating("host-a:new", hostname="host-a", pid=os.getpid())
    # Then the predecessor's attempt is released at once
    assert lease_of(clocked, held) == clock.now
    clock.advance(1)
    assert clocked.store.sweep.reclaim_lost() == [held.invocation.id]


def test_a_claim_won_while_the_worker_gives_up_its_work_is_released(clocked, clock):
    # Given a worker releasing what it runs as it exits
    tenant = clocked.store.tenants.create("t-exit").id
    leases = keeper(clocked, "exiting", lease_s=10, grace_s=5)
    running = run_on(clocked, leases, tenant)
    assert leases.release_all() == 1
    assert lease_of(clocked, running) == clock.now
    # When a claim that was in flight lands afterwards
    inv, _ = clocked.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "y"})
    late = clocked.store.claims.claim(inv.id, "exiting", lease_s=10)
    assert isinstance(late, Claimed)
    # Then the worker must not run it, and its lease ends at once too
    assert not leases.hold(late)
    assert lease_of(clocked, late) == clock.now
    # and nothing is renewed any more
    assert leases.renew_once() == set()


def test_a_worker_renews_the_attempts_it_runs_longer_than_the_lease(runtime_with, make_tenant):
    # Given a worker whose leases last 2 s unless renewed
    runtime = runtime_with(lease_s=2.0)
    tenant = make_tenant()
    handle = runtime.start_worker()
    try:
        # When it runs an invocation that takes twice as long
        inv, _ = runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "x", "sleep_s": 4}
        )
        done = wait_for(finished(runtime, inv.id))
    finally:
        handle.stop(grace_s=5)
    # Then its one attempt succeeded: the sweep never took it back
    assert done.status == "succeeded" and done.attempts == 1
    assert executions(runtime, inv.id) == 1
    # and the worker holds nothing once the attempt ended
    assert runtime.leases.held() == []


def test_a_draining_worker_releases_what_it_could_not_finish(runtime, runtime_with, make_tenant):
    # Given a worker running an invocation longer than its shutdown grace
    tenant = make_tenant()
    handle = runtime.start_worker()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x", "sleep_s": 3}
    )
    wait_for(lambda: runtime.store.invocations.get(inv.id).status == "running")
    # When it stops with a grace that runs out
    assert handle.stop(grace_s=0.2) == 1
    # Then its claim ends at once (its lease would last 30 s)
    lease = runtime.store.invocations.get(inv.id).lease_expires_at
    assert lease is not None and lease <= datetime.now(UTC)
    # and another worker runs the invocation right away
    other = runtime_with()
    second = other.start_worker()
    try:
        done = wait_for(finished(other, inv.id))
    finally:
        second.stop(grace_s=5)
        for thread in handle.worker.workers:  # the given-up attempt ends, its result refused
            thread.join(timeout=10)
    assert done.status == "succeeded"
    assert outcomes(runtime, inv.id) == [
        ("lost", runtime.worker_id),
        ("succeeded", other.worker_id),
    ]
    assert runtime.store.invocations.get(inv.id).result == done.result
