"""Recovery through the store: lost leases, lost messages, concurrent duplicates."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import sqlalchemy as sa

from runtime.recovery.sweeper import ENQUEUE_SLACK
from runtime.store import models
from runtime.store.claims import Claimed
from runtime.worker.queues import queue_depths
from tests.conftest import executions
from tests.waiting import finished, wait_for


def test_an_attempt_whose_worker_died_runs_again_once_its_lease_expires(runtime, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "survive"}
    )
    # Given a worker that claimed the invocation and died (its message died with it)
    claim = runtime.store.claims.claim(inv.id, "dead-worker", lease_s=0.3)
    assert isinstance(claim, Claimed)
    runtime.broker.flush_all()
    # When a live worker runs the sweep
    handle = runtime.start_worker()
    try:
        done = wait_for(lambda: (v := runtime.store.invocations.get(inv.id)).finished and v)
    finally:
        handle.stop(grace_s=5)
    # Then the invocation ran again and succeeded; the lost attempt is on record
    assert done.status == "succeeded" and done.attempts == 2
    outcomes = [
        (a.number, a.outcome, a.worker_id) for a in runtime.store.invocations.attempts(inv.id)
    ]
    assert outcomes[0] == (1, "lost", "dead-worker")
    assert outcomes[1][1] == "succeeded" and outcomes[1][2] != "dead-worker"
    assert executions(runtime, inv.id) == 1


def test_lost_attempts_count_against_the_retry_budget(runtime, make_tenant):
    tenant = make_tenant()
    # `slow` allows no retries: one lost attempt and it has failed for good.
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="slow", payload={"seconds": 0})
    assert isinstance(runtime.store.claims.claim(inv.id, "dead-worker", lease_s=0), Claimed)
    assert runtime.store.sweep.reclaim_lost() == []
    failed = runtime.store.invocations.get(inv.id)
    assert failed.status == "failed" and failed.error["type"] == "WorkerLost"


def test_a_result_from_a_worker_that_lost_its_lease_is_discarded(runtime, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "x"})
    first = runtime.store.claims.claim(inv.id, "slow-worker", lease_s=0)
    assert isinstance(first, Claimed)
    # The lease expires and another worker takes over and finishes.
    runtime.store.sweep.reclaim_lost()
    second = runtime.store.claims.claim(inv.id, "fast-worker", lease_s=60)
    assert isinstance(second, Claimed)
    # Each records in its function's session, as the executor does: leaving the tenant
    # scope (PostgreSQL's function role) first
    with runtime.store.db.open_session(tenant) as s:
        runtime.store.db.leave_function_scope(s)
        assert runtime.store.claims.succeed(s, second, {"by": "fast"})
        s.commit()
    # When the first worker finally tries to record its result, it is refused.
    with runtime.store.db.open_session(tenant) as s:
        runtime.store.db.leave_function_scope(s)
        assert not runtime.store.claims.succeed(s, first, {"by": "slow"})
        s.rollback()
    assert runtime.store.invocations.get(inv.id).result == {"by": "fast"}


def test_queued_invocations_the_broker_lost_are_sent_again(runtime, make_tenant):
    tenant = make_tenant()
    accepted = [
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": str(n)}
        ).invocation
        for n in range(10)
    ]
    runtime.broker.flush_all()  # Redis restarted empty / the process holding them died
    handle = runtime.start_worker()
    try:
        for inv in accepted:
            done = wait_for(lambda i=inv: (v := runtime.store.invocations.get(i.id)).finished and v)
            assert done.status == "succeeded"
            assert executions(runtime, inv.id) == 1
    finally:
        handle.stop(grace_s=5)


def test_a_backlog_waiting_in_the_broker_is_not_sent_again_but_what_it_lost_is(
    runtime_with, make_tenant
):
    # Given invocations the broker lost, then a backlog accepted after them, all of them
    # older than redispatch_after_s and no worker running
    runtime = runtime_with(redispatch_after_s=0.5)
    tenant = make_tenant()

    def accept(n: int) -> list[str]:
        return [
            runtime.invocations.accept(
                tenant_id=tenant, function="echo", payload={"message": "x"}
            ).invocation.id
            for _ in range(n)
        ]

    lost = accept(5)
    runtime.broker.flush_all()
    time.sleep(ENQUEUE_SLACK.total_seconds() + 0.2)
    waiting = accept(5)
    time.sleep(0.7)
    # When the sweep runs
    report = runtime.sweep()
    # Then it sends again just the lost ones, which were dispatched before the oldest
    # message still waiting; the backlog behind it keeps its single message each
    assert report.sent == 5
    assert depth(runtime) == 10
    resent = {
        i for i in lost + waiting if dispatched_at(runtime, i) > dispatched_at(runtime, waiting[-1])
    }
    assert resent == set(lost)
    # and a second sweep right away sends nothing more
    assert runtime.sweep().sent == 0
    # and once a worker runs, each invocation runs exactly once
    handle = runtime.start_worker()
    try:
        for invocation_id in lost + waiting:
            assert wait_for(finished(runtime, invocation_id)).status == "succeeded"
            assert executions(runtime, invocation_id) == 1
    finally:
        handle.stop(grace_s=5)


def depth(runtime) -> int:
    return {d.queue: d.length for d in queue_depths(runtime.broker)}["default"]


def dispatched_at(runtime, invocation_id: str) -> datetime:
    with runtime.store.db.engine.connect() as connection:
        return connection.execute(
            sa.select(models.Invocation.dispatched_at).where(models.Invocation.id == invocation_id)
        ).scalar_one()


def test_fifty_concurrent_identical_requests_make_one_invocation_and_one_execution(
    runtime, worker, make_tenant
):
    tenant = make_tenant()

    def accept(_n: int) -> tuple[str, bool]:
        inv, created = runtime.invocations.accept(
            tenant_id=tenant,
            function="echo",
            payload={"message": "same"},
            idempotency_key="order-42",
        )
        return inv.id, created

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(accept, range(50)))
    ids = {invocation_id for invocation_id, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    [invocation_id] = ids
    wait_for(lambda: runtime.store.invocations.get(invocation_id).finished)
    assert executions(runtime, invocation_id) == 1
    listed, _ = runtime.store.invocations.list(tenant)
    assert len(listed) == 1
