"""Retention: finished invocations, their attempts and their keys are removed in time.

The store's clock is injected and the sweep is driven directly, so nothing here sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from runtime.app import Runtime
from runtime.errors import InvocationNotFound, RequestRejected, TenantNotFound
from runtime.recovery.retention import RetentionSweep
from runtime.services.tenants import TenantService
from runtime.store import models
from runtime.store.retention import (
    RetentionPolicy,
    TenantRetention,
    expiries,
)
from tests.clocks import ManualClock
from tests.conftest import prepare

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
ECHO = {"message": "kept for a while"}
DAY = 86_400


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def build(backend, settings_for, clock) -> Iterator[Callable[..., Runtime]]:
    """A migrated runtime on this test's backend with the fake clock and setting overrides."""
    built: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        values = {
            "retention_succeeded_s": 1,
            "retention_failed_s": 1,
            "retention_cancelled_s": 1,
            "retention_interval_s": 0,
        }
        runtime = prepare(Runtime(settings_for(backend, **values | overrides), clock=clock))
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


def accepted(rt: Runtime, tenant: str, **options: Any) -> str:
    return rt.invocations.accept(tenant_id=tenant, function="echo", payload=ECHO, **options)[0].id


def claimed(rt: Runtime, tenant: str) -> Any:
    claim = rt.store.claims.claim(accepted(rt, tenant), "worker-1", lease_s=10 * DAY)
    assert not hasattr(claim, "reason"), claim
    return claim


def succeeded(rt: Runtime, tenant: str, **options: Any) -> str:
    inv = accepted(rt, tenant, **options)
    claim = rt.store.claims.claim(inv, "worker-1", lease_s=60)
    assert rt.store.claims.succeed_alone(claim, {"message": "done"})
    return inv


def failed(rt: Runtime, tenant: str, *, retry_at: datetime | None = None) -> str:
    claim = claimed(rt, tenant)
    error = {"type": "Boom", "message": "no"}
    rt.store.claims.fail(claim, outcome="failed", error=error, traceback=None, retry_at=retry_at)
    return str(claim.invocation.id)


def cancelled(rt: Runtime, tenant: str) -> str:
    return rt.store.invocations.cancel(accepted(rt, tenant), None).id


def exists(rt: Runtime, invocation_id: str) -> bool:
    try:
        rt.store.invocations.get(invocation_id)
    except InvocationNotFound:
        return False
    return True


def attempt_rows(rt: Runtime, ids: list[str]) -> int:
    with rt.store.db.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(models.Attempt.invocation_id.in_(ids))
        return int(conn.execute(query).scalar_one())


def test_finished_invocations_disappear_within_a_sweep_and_unfinished_ones_stay(
    build, clock, make_tenant
):
    rt = build()
    tenant = make_tenant()
    # Given one invocation in every final status, each with its attempt log
    finished = [succeeded(rt, tenant), failed(rt, tenant), cancelled(rt, tenant)]
    assert attempt_rows(rt, finished) == 2
    # and one in every unfinished status, plus a failed one retried by hand
    unfinished = {
        accepted(rt, tenant): "queued",
        accepted(rt, tenant, delay_s=30 * DAY): "scheduled",
        claimed(rt, tenant).invocation.id: "running",
        failed(rt, tenant, retry_at=START + timedelta(days=30)): "retrying",
    }
    requeued = failed(rt, tenant)
    rt.invocations.retry(requeued, tenant)
    unfinished[requeued] = "queued"
    # When the sweep runs before their retention (1 s) ends, nothing goes
    clock.advance(0.5)
    assert rt.sweep().removed == 0
    assert all(exists(rt, i) for i in finished)
    # When it runs once it has ended
    clock.advance(1)
    report = rt.sweep()
    # Then the finished ones are gone, attempts and all
    assert report.removed == 3
    assert not any(exists(rt, i) for i in finished)
    assert attempt_rows(rt, finished) == 0
    # and nothing unfinished was touched, however long it waits
    clock.advance(365 * DAY)
    assert RetentionSweep(rt.store, RetentionPolicy(1, 1, 1), interval_s=0, batch_size=1)() == 0
    assert {i: rt.store.invocations.get(i).status for i in unfinished} == unfinished


def test_a_reused_key_makes_a_new_invocation_once_the_old_one_is_removed(build, clock, make_tenant):
    rt = build()
    tenant = make_tenant()
    first = succeeded(rt, tenant, idempotency_key="order-42")
    # While it is kept, the key replays it
    again = rt.invocations.accept(
        tenant_id=tenant, function="echo", payload=ECHO, idempotency_key="order-42"
    )
    assert (again.invocation.id, again.created) == (first, False)
    # Once it is removed
    clock.advance(2)
    assert rt.sweep().removed == 1
    # Then the same key makes a new invocation, even with another body
    new = rt.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "other"}, idempotency_key="order-42"
    )
    assert new.created and new.invocation.id != first
    assert new.invocation.status == "queued"


def test_a_child_outlives_its_removed_parent(build, clock, make_tenant):
    rt = build()
    tenant = make_tenant()
    parent = succeeded(rt, tenant)
    child = accepted(rt, tenant, parent_id=parent, trigger="invoke")
    clock.advance(2)
    rt.sweep()
    assert not exists(rt, parent)
    assert rt.store.invocations.get(child).parent_id == parent


def test_a_tenants_retention_wins_over_the_default(build, clock, make_tenant):
    rt = build(retention_succeeded_s=DAY, retention_failed_s=1)
    service = TenantService(rt.store)
    default, brief, keeper = make_tenant(), make_tenant(), make_tenant()
    service.set_retention(brief, {"succeeded": 1})
    service.set_retention(keeper, {"failed": 0, "cancelled": 3600})
    ids = {
        (tenant, kind): make(rt, tenant)
        for tenant in (default, brief, keeper)
        for kind, make in (("succeeded", succeeded), ("failed", failed))
    }
    # When the sweep runs 2 s later
    clock.advance(2)
    rt.sweep()
    # Then the tenant with 1 s for succeeded lost it, the default (a day) kept it,
    # and the tenant keeping failed ones forever kept its failed one
    gone = {key for key, inv in ids.items() if not exists(rt, inv)}
    assert gone == {(default, "failed"), (brief, "succeeded"), (brief, "failed")}
    # When a tenant goes back to the default
    service.set_retention(keeper, {"failed": None})
    assert service.retention(keeper) == TenantRetention(keeper, None, None, 3600)
    rt.sweep()
    assert not exists(rt, ids[(keeper, "failed")])


def test_zero_keeps_finished_invocations_forever(build, clock, make_tenant):
    rt = build(retention_succeeded_s=0, retention_failed_s=0, retention_cancelled_s=0)
    tenant = make_tenant()
    kept = [succeeded(rt, tenant), failed(rt, tenant), cancelled(rt, tenant)]
    clock.advance(100 * 365 * DAY)
    assert rt.sweep().removed == 0
    assert all(exists(rt, i) for i in kept)


def test_removal_runs_in_batches_and_a_run_cut_short_resumes_on_the_next_sweep(
    build, clock, make_tenant
):
    rt = build()
    tenant = make_tenant()
    for _ in range(5):
        cancelled(rt, tenant)
    clock.advance(2)
    # A run whose time budget is spent after each batch removes one batch per call,
    retention = RetentionSweep(
        rt.store, RetentionPolicy(1, 1, 1), interval_s=3600, batch_size=2, budget_s=0
    )
    assert [retention(), retention(), retention()] == [2, 2, 1]
    # and while it is not behind it waits for its interval (by the store's clock)
    cancelled(rt, tenant)
    clock.advance(2)
    assert retention() == 0
    clock.advance(3600)
    assert retention() == 1
    # A run with time to spare removes every batch at once
    for _ in range(5):
        cancelled(rt, tenant)
    clock.advance(2)
    whole = RetentionSweep(rt.store, RetentionPolicy(1, 1, 1), interval_s=0, batch_size=2)
    assert whole() == 5


def test_tenants_sharing_a_retention_share_one_statement():
    policy = RetentionPolicy(succeeded_s=DAY, failed_s=7 * DAY, cancelled_s=0)
    tenants = [TenantRetention("a"), TenantRetention("b"), TenantRetention("c", succeeded_s=60)]
    found = {
        (e.status.value, e.finished_before, e.tenant_ids) for e in expiries(policy, tenants, START)
    }
    assert found == {
        ("succeeded", START - timedelta(seconds=60), ("c",)),
        ("succeeded", START - timedelta(days=1), ("a", "b")),
        ("failed", START - timedelta(days=7), ("a", "b", "c")),
    }


def test_set_retention_checks_its_values(runtime, make_tenant):
    service = TenantService(runtime.store)
    tenant = make_tenant()
    with pytest.raises(RequestRejected):
        service.set_retention(tenant, {"running": 60})
    with pytest.raises(RequestRejected):
        service.set_retention(tenant, {"failed": -1})
    with pytest.raises(TenantNotFound):
        service.set_retention("nobody", {"failed": 60})
    assert service.retention(tenant) == TenantRetention(tenant)


def test_removal_walks_the_partial_index_of_finished_invocations(runtime, make_tenant):
    tenant = make_tenant()
    expiry = expiries(RetentionPolicy(1, 1, 1), [TenantRetention(tenant)], START)[0]
    # Given the statement a removal sends, as the driver gets it
    sent: list[tuple[str, Any]] = []
    engine = runtime.store.db.engine

    def record(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().startswith("DELETE"):
            sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        runtime.store.retention.remove(expiry, limit=1000)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    [(statement, parameters)] = sent
    # Then its plan uses the retention index
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if runtime.store.db.dialect == "postgresql":
            # The table is nearly empty: only ask whether the index can serve the query.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {statement}", parameters)
            plan = [row[0] for row in cursor.fetchall()]
        else:
            cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [row[-1] for row in cursor.fetchall()]
    finally:
        raw.close()
    assert any("ix_invocations_finished" in line for line in plan), plan


def test_migration_0006_adds_the_retention_columns_and_goes_back(runtime, make_tenant):
    tenant = make_tenant()
    config = runtime.store._alembic()
    with runtime.store.db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005_operators")
    with runtime.store.db.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("tenants")}
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("invocations")}
    assert "retention_succeeded_s" not in columns and "ix_invocations_finished" not in indexes
    runtime.store.migrate()
    assert runtime.store.is_current()
    assert runtime.store.tenants.retention(tenant) == TenantRetention(tenant)


def test_the_retention_index_covers_exactly_the_finished_states():
    named = set(re.findall(r"'(\w+)'", models.FINISHED_SQL))
    assert named == {s.value for s in models.FINISHED}


def test_the_api_says_how_long_idempotency_keys_are_kept(client):
    document = client.simulate_get("/openapi.json").json
    text = document["components"]["parameters"]["IdempotencyKey"]["description"]
    assert "FERRY_RETENTION_SUCCEEDED_S" in text and "new one" in text
