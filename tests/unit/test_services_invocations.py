"""The invocations service: accept, wait, read, cancel, retry and bulk retry.

Each test runs on the embedded store and broker and on real PostgreSQL and Redis.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from runtime.errors import (
    BadRequest,
    BrokerUnavailable,
    FunctionNotFound,
    IdempotencyConflict,
    InputInvalid,
    InvalidState,
    InvocationNotFound,
    StoreUnavailable,
    TenantSuspended,
)
from runtime.services.invocations import MAX_BULK_RETRY, InvocationService
from runtime.store import models
from runtime.store.claims import Claimed
from runtime.store.views import InvocationView
from tests.conftest import executions
from tests.waiting import finished, wait_for

ECHO = {"message": "hi"}


def accept(runtime, tenant: str, **options) -> InvocationView:
    return runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload=ECHO, **options
    ).invocation


def failed(runtime, tenant: str) -> InvocationView:
    """An invocation of `tenant` that failed for good (claimed, then failed)."""
    invocation = accept(runtime, tenant)
    claimed = runtime.store.claims.claim(invocation.id, "a-worker", lease_s=60)
    assert isinstance(claimed, Claimed)
    error = {"type": "Permanent", "message": "no"}
    status = runtime.store.claims.fail(
        claimed, outcome="failed", error=error, traceback=None, retry_at=None
    )
    assert status == "failed"
    return runtime.store.invocations.get(invocation.id)


def dispatched_at(runtime, invocation_id: str):
    with runtime.store.db.engine.connect() as connection:
        return connection.execute(
            sa.select(models.Invocation.dispatched_at).where(models.Invocation.id == invocation_id)
        ).scalar_one()


class FakeTime:
    """`sleep` and `monotonic` for `InvocationService.wait`, with a hook on each sleep."""

    def __init__(self, on_sleep=None) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))

    def monotonic(self) -> float:
        return self.now


def service_with(runtime, fake: FakeTime) -> InvocationService:
    return InvocationService(
        runtime.store,
        runtime.registry,
        runtime.dispatcher,
        sleep=fake.sleep,
        monotonic=fake.monotonic,
    )


# --- accept ---------------------------------------------------------------------------------


def test_accept_stores_validated_input_and_a_replay_returns_the_same_invocation(
    runtime, make_tenant
):
    tenant = make_tenant()
    # When an invocation is accepted, then again with the same key and input
    first = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload=ECHO, idempotency_key="k", request_id="r-1"
    )
    again = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload=ECHO, idempotency_key="k"
    )
    # Then one invocation is stored, queued, and the second call is a replay of it
    assert first.created and not again.created
    assert again.invocation.id == first.invocation.id
    stored = runtime.store.invocations.get(first.invocation.id, tenant)
    assert (stored.status, stored.trigger, stored.request_id) == ("queued", "http", "r-1")
    # the input is stored as validated, defaults filled in
    assert stored.payload == {**ECHO, "sleep_s": 0.0} and stored.idempotency_key == "k"
    # and without a key the invocation's id is its key
    keyless = accept(runtime, tenant)
    assert keyless.idempotency_key == keyless.id


def test_accept_refuses_what_it_cannot_run_and_stores_nothing(runtime, make_tenant):
    tenant = make_tenant()
    accept(runtime, tenant, idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "other"}, idempotency_key="k"
        )
    with pytest.raises(InputInvalid):
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": ""})
    with pytest.raises(FunctionNotFound):
        runtime.invocations.accept(tenant_id=tenant, function="no-such", payload={})
    runtime.tenants.suspend(tenant)
    with pytest.raises(TenantSuspended):
        accept(runtime, tenant)
    assert len(runtime.invocations.list(tenant).invocations) == 1


def test_accept_with_delay_or_at_schedules_it_and_refuses_both(runtime, make_tenant):
    tenant = make_tenant()
    delayed = accept(runtime, tenant, delay_s=60)
    assert delayed.status == "scheduled"
    assert (
        timedelta(seconds=59) < delayed.scheduled_for - delayed.created_at <= timedelta(seconds=60)
    )
    later = delayed.created_at + timedelta(hours=1)
    assert accept(runtime, tenant, at=later).scheduled_for == later
    for refused in (
        {"at": later, "delay_s": 1},
        {"delay_s": -1},
        {"delay_s": float("nan")},
        {"delay_s": 1e300},
        {"at": later.replace(tzinfo=None)},
    ):
        with pytest.raises(BadRequest):
            accept(runtime, tenant, **refused)
    assert len(runtime.invocations.list(tenant).invocations) == 2


def test_a_failed_send_leaves_the_accepted_invocation_to_the_next_sweep(
    runtime, make_tenant, monkeypatch
):
    tenant = make_tenant()

    # Given a broker that refuses every message
    def refuse(item):
        raise BrokerUnavailable("the broker is unreachable: ConnectionError")

    monkeypatch.setattr(runtime.dispatcher, "send", refuse)
    # When an invocation is accepted
    accepted = runtime.invocations.accept(tenant_id=tenant, function="echo", payload=ECHO)
    # Then it is accepted all the same, marked unsent
    assert accepted.created and accepted.invocation.status == "queued"
    assert dispatched_at(runtime, accepted.invocation.id) is None
    # And once the broker answers, the next sweep sends it at once, and it runs once
    monkeypatch.undo()
    assert runtime.sweep().sent == 1
    handle = runtime.start_worker()
    try:
        assert wait_for(finished(runtime, accepted.invocation.id)).status == "succeeded"
    finally:
        handle.stop(grace_s=5)
    assert executions(runtime, accepted.invocation.id) == 1


def test_a_send_that_works_is_not_sent_again_by_the_sweep(runtime, make_tenant):
    invocation = accept(runtime, make_tenant())
    assert dispatched_at(runtime, invocation.id) is not None
    assert runtime.sweep().sent == 0


# --- wait -----------------------------------------------------------------------------------


def test_wait_polls_more_slowly_as_time_passes_and_stops_at_the_deadline(runtime, make_tenant):
    invocation = accept(runtime, make_tenant())
    fake = FakeTime()
    seen = service_with(runtime, fake).wait(invocation, 1.0)
    assert seen.status == "queued"
    assert fake.sleeps[:5] == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.25])
    assert set(fake.sleeps[5:-1]) == {0.25}
    assert sum(fake.sleeps) == pytest.approx(1.0)


def test_wait_returns_as_soon_as_the_invocation_finishes(runtime, make_tenant):
    tenant = make_tenant()
    invocation = accept(runtime, tenant)
    fake = FakeTime(on_sleep=lambda n: n == 3 and runtime.invocations.cancel(invocation.id, tenant))
    seen = service_with(runtime, fake).wait(invocation, 30)
    assert seen.status == "cancelled" and len(fake.sleeps) == 3


def test_wait_ends_with_what_it_knows_when_the_store_stops_answering(
    runtime, make_tenant, monkeypatch
):
    invocation = accept(runtime, make_tenant())

    def unavailable(*args, **kwargs):
        raise StoreUnavailable("the store is unreachable")

    monkeypatch.setattr(runtime.store.invocations, "get", unavailable)
    fake = FakeTime()
    assert service_with(runtime, fake).wait(invocation, 30) == invocation
    assert len(fake.sleeps) == 1


def test_wait_for_a_finished_invocation_does_not_poll(runtime, make_tenant):
    tenant = make_tenant()
    cancelled = runtime.invocations.cancel(accept(runtime, tenant).id, tenant)
    fake = FakeTime()
    assert service_with(runtime, fake).wait(cancelled, 30) == cancelled
    assert fake.sleeps == []


# --- reading --------------------------------------------------------------------------------


def test_get_gives_the_attempt_log_and_hides_another_tenants_invocation(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    invocation = failed(runtime, mine)
    found = runtime.invocations.get(invocation.id, mine)
    assert found.invocation.id == invocation.id
    assert [(a.number, a.outcome) for a in found.attempts] == [(1, "failed")]
    assert runtime.invocations.get(invocation.id, None).invocation.id == invocation.id
    with pytest.raises(InvocationNotFound):
        runtime.invocations.get(invocation.id, theirs)


def test_list_pages_newest_first_within_the_tenant(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    ids = [accept(runtime, mine).id for _ in range(5)]
    accept(runtime, theirs)
    first = runtime.invocations.list(mine, limit=3)
    second = runtime.invocations.list(mine, limit=3, cursor=first.next_cursor)
    assert [v.id for v in first.invocations + second.invocations] == ids[::-1]
    assert second.next_cursor is None
    assert runtime.invocations.list(mine, status="failed").invocations == []
    assert len(runtime.invocations.list(None).invocations) == 6
    for refused in ({"limit": 0}, {"limit": 201}, {"status": "done"}, {"cursor": "nonsense"}):
        with pytest.raises(BadRequest):
            runtime.invocations.list(mine, **refused)


# --- cancel and retry -----------------------------------------------------------------------


def test_cancel_only_what_is_not_running_yet(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    invocation = accept(runtime, mine)
    with pytest.raises(InvocationNotFound):
        runtime.invocations.cancel(invocation.id, theirs)
    assert runtime.invocations.cancel(invocation.id, mine).status == "cancelled"
    with pytest.raises(InvalidState):
        runtime.invocations.cancel(invocation.id, mine)


def test_retry_queues_a_failed_invocation_again_and_it_runs(runtime, make_tenant):
    tenant = make_tenant()
    invocation = failed(runtime, tenant)
    retried = runtime.invocations.retry(invocation.id, tenant)
    assert retried.status == "queued" and retried.error is None
    with pytest.raises(InvalidState):
        runtime.invocations.retry(invocation.id, tenant)
    handle = runtime.start_worker()
    try:
        assert wait_for(finished(runtime, invocation.id)).status == "succeeded"
    finally:
        handle.stop(grace_s=5)


def test_retry_is_404_for_another_tenants_invocation_before_the_suspended_check(
    runtime, make_tenant
):
    mine, theirs = make_tenant(), make_tenant()
    their_failed, my_failed = failed(runtime, theirs), failed(runtime, mine)
    runtime.tenants.suspend(mine)
    # Another tenant's invocation is not found, even for a suspended tenant
    with pytest.raises(InvocationNotFound):
        runtime.invocations.retry(their_failed.id, mine)
    # Its own is refused: a suspended tenant runs nothing new
    with pytest.raises(TenantSuspended):
        runtime.invocations.retry(my_failed.id, mine)
    # An operator (no tenant) acts for the invocation's tenant, with the same rule
    with pytest.raises(TenantSuspended):
        runtime.invocations.retry(my_failed.id, None)
    assert runtime.invocations.retry(their_failed.id, None).tenant_id == theirs
    assert runtime.store.invocations.get(my_failed.id).status == "failed"


def test_a_retry_whose_send_fails_is_left_to_the_next_sweep(runtime, make_tenant, monkeypatch):
    tenant = make_tenant()
    invocation = failed(runtime, tenant)

    def refuse(item):
        raise BrokerUnavailable("the broker is unreachable: ConnectionError")

    monkeypatch.setattr(runtime.dispatcher, "send", refuse)
    assert runtime.invocations.retry(invocation.id, tenant).status == "queued"
    assert dispatched_at(runtime, invocation.id) is None
    monkeypatch.undo()
    assert runtime.sweep().sent == 1


def test_retry_failed_retries_each_failed_one_once_and_skips_the_rest(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    first, second = failed(runtime, mine), failed(runtime, mine)
    queued = accept(runtime, mine)
    cancelled = runtime.invocations.cancel(accept(runtime, mine).id, mine)
    their_failed = failed(runtime, theirs)
    names = [first.id, queued.id, first.id, cancelled.id, their_failed.id, "missing", second.id]
    done = runtime.invocations.retry_failed(names, mine)
    assert [v.id for v in done.retried] == [first.id, second.id]
    assert {v.status for v in done.retried} == {"queued"}
    assert done.skipped == (queued.id, cancelled.id, their_failed.id, "missing")
    assert runtime.store.invocations.get(their_failed.id).status == "failed"
    # An operator retries any tenant's
    assert [v.id for v in runtime.invocations.retry_failed([their_failed.id], None).retried] == [
        their_failed.id
    ]


def test_retry_failed_names_at_most_the_bulk_limit(runtime, make_tenant):
    tenant = make_tenant()
    done = runtime.invocations.retry_failed(
        [f"missing-{n}" for n in range(MAX_BULK_RETRY + 5)], tenant
    )
    assert done.retried == () and len(done.skipped) == MAX_BULK_RETRY
