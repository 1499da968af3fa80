"""The execution path: claim, run, record, retry, timeout, duplicates, children."""

from __future__ import annotations

import itertools

import pytest

from runtime.app import Runtime
from runtime.errors import IdempotencyConflict, InputInvalid, TenantSuspended
from runtime.store.models import TenantStatus
from runtime.store.sweep import Dispatch
from tests.conftest import executions
from tests.waiting import finished, wait_for


def test_a_function_runs_once_and_its_result_is_stored(runtime, worker, make_tenant):
    # Given a tenant
    tenant = make_tenant()
    # When an invocation is accepted
    inv, created = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "hello"}
    )
    # Then it succeeds with the handler's output, run once in its tenant's context
    assert created and inv.status == "queued"
    done = wait_for(finished(runtime, inv.id), what="echo to finish")
    assert done.status == "succeeded"
    assert done.result == {"message": "hello", "tenant_id": tenant, "attempt": 1}
    assert done.attempts == 1
    assert executions(runtime, inv.id) == 1
    attempts = runtime.store.invocations.attempts(inv.id)
    assert [(a.number, a.outcome) for a in attempts] == [(1, "succeeded")]


def test_retries_back_off_and_then_succeed(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"fail_times": 2}
    )
    done = wait_for(finished(runtime, inv.id), what="flaky to finish")
    assert done.status == "succeeded"
    attempts = runtime.store.invocations.attempts(inv.id)
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "succeeded"]
    # Each retry waited at least half its computed backoff (min_backoff 0.05 s, doubling).
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05


def test_retries_run_out_and_the_invocation_fails_with_its_error(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"fail_times": 10}
    )
    done = wait_for(finished(runtime, inv.id), what="flaky to fail")
    assert done.status == "failed"
    assert done.attempts == 4  # one run and max_retries=3 retries
    assert done.error == {"type": "Retryable", "message": "attempt 4 fails"}
    assert executions(runtime, inv.id) == 4


def test_a_permanent_error_is_not_retried(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    done = wait_for(finished(runtime, inv.id))
    assert done.status == "failed" and done.attempts == 1
    assert done.error["type"] == "Permanent"


def test_an_output_that_does_not_validate_fails_permanently(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="bad_output", payload={})
    done = wait_for(finished(runtime, inv.id))
    assert done.status == "failed" and done.attempts == 1
    assert done.error["type"] == "ValidationError"


def test_timeout_stops_the_attempt_with_time_limit_exceeded(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="slow", payload={"seconds": 30})
    done = wait_for(finished(runtime, inv.id), timeout=15)
    assert done.status == "failed"
    assert done.error["type"] == "TimeLimitExceeded"
    [attempt] = runtime.store.invocations.attempts(inv.id)
    assert attempt.outcome == "timed_out"
    assert (attempt.finished_at - attempt.started_at).total_seconds() < 10


def test_a_duplicate_delivery_does_nothing(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "once"}
    )
    wait_for(finished(runtime, inv.id))
    # When the broker delivers the same invocation twice more
    item = Dispatch(inv.id, tenant, "echo", "default")
    runtime.dispatcher.send(item)
    runtime.dispatcher.send(item)
    # Then the function still ran exactly once
    wait_for(lambda: runtime.store.invocations.get(inv.id).status == "succeeded")
    assert executions(runtime, inv.id) == 1
    assert runtime.store.invocations.get(inv.id).attempts == 1


def test_a_duplicate_delivery_while_running_does_nothing(runtime, worker, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "slowly", "sleep_s": 0.5}
    )
    wait_for(lambda: runtime.store.invocations.get(inv.id).status == "running")
    runtime.dispatcher.send(Dispatch(inv.id, tenant, "echo", "default"))
    done = wait_for(finished(runtime, inv.id))
    assert done.status == "succeeded"
    assert executions(runtime, inv.id) == 1


def test_idempotent_accept_returns_the_first_invocation(runtime, make_tenant):
    tenant = make_tenant()
    first, created = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "a"}, idempotency_key="k1"
    )
    again, created_again = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "a"}, idempotency_key="k1"
    )
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "b"}, idempotency_key="k1"
        )
    # Keys are per tenant and per function.
    other = make_tenant()
    theirs, created_other = runtime.invocations.accept(
        tenant_id=other, function="echo", payload={"message": "a"}, idempotency_key="k1"
    )
    assert created_other and theirs.id != first.id


def test_invalid_input_is_refused_before_anything_is_stored(runtime, make_tenant):
    tenant = make_tenant()
    with pytest.raises(InputInvalid) as caught:
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": ""})
    assert caught.value.errors[0]["loc"] == ["message"]
    assert runtime.store.invocations.list(tenant)[0] == []


def test_a_suspended_tenant_cannot_invoke(runtime, make_tenant):
    tenant = make_tenant()
    runtime.store.tenants.set_status(tenant, TenantStatus.SUSPENDED)
    with pytest.raises(TenantSuspended):
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "x"})


def test_children_get_keys_derived_from_the_parent_and_are_not_duplicated_by_retries(
    runtime, worker, make_tenant
):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="parent", payload={"children": 2}, idempotency_key="p-1"
    )
    done = wait_for(finished(runtime, inv.id))
    # The parent failed once after starting its children, then succeeded.
    assert done.status == "succeeded" and done.attempts == 2
    children, _ = runtime.store.invocations.list(tenant, function="echo")
    assert len(children) == 2
    assert sorted(done.result["child_ids"]) == sorted(c.id for c in children)
    for child in children:
        assert child.parent_id == inv.id and child.trigger == "invoke"
        assert child.idempotency_key.startswith("invoke:p-1/echo/")


def test_a_delayed_invocation_waits_until_due(runtime, worker, make_tenant):
    from datetime import timedelta

    tenant = make_tenant()
    due = runtime.store.db.clock() + timedelta(seconds=1)
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "later"}, at=due
    )
    assert inv.status == "scheduled"
    done = wait_for(finished(runtime, inv.id))
    assert done.status == "succeeded"
    assert done.started_at >= due


def test_queued_invocations_left_by_a_stopped_process_run_after_restart(backend, settings_for):
    from tests.conftest import prepare

    settings = settings_for(backend)
    # Given a process that accepted invocations and stopped before any ran
    first = prepare(Runtime(settings))
    first.store.tenants.create("acme")
    accepted = [
        first.invocations.accept(tenant_id="acme", function="echo", payload={"message": str(n)})[0]
        for n in range(5)
    ]
    first.broker.flush_all()  # what the broker held dies with the process
    first.close()
    # When a new process starts on the same store
    second = Runtime(settings)
    handle = second.start_worker()
    try:
        # Then every accepted invocation runs, once
        for inv in accepted:
            done = wait_for(finished(second, inv.id), timeout=30)
            assert done.status == "succeeded"
            assert executions(second, inv.id) == 1
    finally:
        handle.stop(grace_s=5)
        second.close()


def test_a_suspended_tenants_queued_work_waits_until_it_is_resumed(runtime, make_tenant):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "x"})
    runtime.store.tenants.set_status(tenant, TenantStatus.SUSPENDED)
    handle = runtime.start_worker()
    try:
        # The delivery already in the broker is skipped, and the sweep does not resend it.
        runtime.broker.join("default", timeout=10_000)
        runtime.sweep()
        assert runtime.store.invocations.get(inv.id).status == "queued"
        assert executions(runtime, inv.id) == 0
        # Once resumed, the sweep sends it again and it runs.
        runtime.store.tenants.set_status(tenant, TenantStatus.ACTIVE)
        done = wait_for(finished(runtime, inv.id), timeout=30)
        assert done.status == "succeeded"
    finally:
        handle.stop(grace_s=5)
