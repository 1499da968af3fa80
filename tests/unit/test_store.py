"""The store: tenant scoping of sessions, paging, keys, and migrations matching the models."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from runtime.errors import (
    AlreadyExists,
    BadRequest,
    InvalidState,
    InvocationNotFound,
    RequestRejected,
)
from runtime.quantiles import percentile
from runtime.store import models
from runtime.store.db import TenantViolation, utcnow
from runtime.store.tenants import key_state, parse_scopes


def test_migrations_create_exactly_the_models_schema(runtime):
    with runtime.store.db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = [
            d
            for d in compare_metadata(context, models.Base.metadata)
            if "probe_executions" not in str(d)
        ]
    assert diff == []
    assert runtime.store.is_current()


def test_the_sweep_index_covers_exactly_the_unfinished_states(runtime):
    # The partial index's predicate is SQL text; it must name every state but the finished
    named = set(re.findall(r"'(\w+)'", models.UNFINISHED_SQL))
    assert named == {s.value for s in models.Status} - {s.value for s in models.FINISHED}
    # and the store has it as a partial index
    with runtime.store.db.engine.connect() as conn:
        indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("invocations")}
    assert "ix_invocations_unfinished" in indexes
    assert "ix_invocations_status_scheduled_for" not in indexes
    if runtime.store.db.dialect == "postgresql":
        with runtime.store.db.engine.connect() as conn:
            definition = conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": "ix_invocations_unfinished"},
            ).scalar_one()
        assert "WHERE" in definition and "'succeeded'" not in definition


def test_migrate_twice_is_harmless(runtime):
    runtime.store.migrate()
    assert runtime.store.is_current()


def test_a_tenant_session_cannot_read_another_tenants_rows(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    secret, _ = runtime.invocations.accept(
        tenant_id=theirs, function="echo", payload={"message": "s"}
    )
    own, _ = runtime.invocations.accept(tenant_id=mine, function="echo", payload={"message": "o"})
    with runtime.store.db.session(mine) as s:
        # By primary key, by query, by join, by aggregate: only my rows exist.
        assert s.get(models.Invocation, secret.id) is None
        assert [r.id for r in s.scalars(sa.select(models.Invocation))] == [own.id]
        assert s.scalar(sa.select(sa.func.count()).select_from(models.Invocation)) == 1
        joined = s.scalars(
            sa.select(models.Invocation).join(
                models.Tenant, models.Tenant.id == models.Invocation.tenant_id
            )
        ).all()
        assert [r.id for r in joined] == [own.id]


def test_a_tenant_session_cannot_write_another_tenants_rows(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    _, their_key = runtime.store.tenants.create_key(theirs, parse_scopes("read"))
    their_key_id = their_key.split("_")[1]
    # Inserting a row for another tenant fails and nothing is written.
    with pytest.raises(TenantViolation), runtime.store.db.session(mine) as s:
        s.add(
            models.ApiKey(
                id="x" * 12,
                tenant_id=theirs,
                name="",
                secret_hash="0" * 64,
                scopes="admin",
                created_at=runtime.store.db.clock(),
                expires_at=None,
                revoked_at=None,
            )
        )
    assert runtime.store.tenants.authenticate(their_key) is not None
    # Bulk updates and deletes through the tenant session do not reach other tenants.
    with runtime.store.db.session(mine) as s:
        s.execute(sa.update(models.ApiKey).values(revoked_at=runtime.store.db.clock()))
        s.execute(sa.delete(models.ApiKey))
    assert [k.id for k in runtime.store.tenants.list_keys(theirs)] == [their_key_id]
    assert runtime.store.tenants.authenticate(their_key) is not None
    # A row's tenant cannot be changed to move it between tenants.
    own_view, _ = runtime.store.tenants.create_key(mine, parse_scopes("read"))
    with pytest.raises(TenantViolation), runtime.store.db.session(mine) as s:
        row = s.get(models.ApiKey, own_view.id)
        row.tenant_id = theirs


def test_a_new_row_in_a_tenant_session_gets_the_tenant(runtime, make_tenant):
    mine = make_tenant()
    with runtime.store.db.session(mine) as s:
        row = models.ApiKey(
            id="y" * 12,
            name="",
            secret_hash="0" * 64,
            scopes="read",
            created_at=runtime.store.db.clock(),
            expires_at=None,
            revoked_at=None,
        )
        s.add(row)
    assert row.tenant_id == mine


def test_listing_pages_newest_first_with_a_cursor(runtime, make_tenant):
    tenant = make_tenant()
    ids = [
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": str(n)}
        ).invocation.id
        for n in range(7)
    ]
    seen, cursor = [], None
    while True:
        page, cursor = runtime.store.invocations.list(tenant, limit=3, cursor=cursor)
        seen += [v.id for v in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    with pytest.raises(BadRequest):
        runtime.store.invocations.list(tenant, cursor="not-a-cursor")


def test_listing_filters_by_creation_time(runtime, make_tenant):
    tenant = make_tenant()
    first, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "1"}
    )
    second, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "2"}
    )
    # From inclusive, to exclusive: one query for the API's and the dashboard's listings.
    page, _ = runtime.store.invocations.list(tenant, created_from=second.created_at)
    assert [v.id for v in page] == [second.id]
    page, _ = runtime.store.invocations.list(tenant, created_to=second.created_at)
    assert [v.id for v in page] == ([first.id] if first.created_at < second.created_at else [])


def test_another_tenants_invocation_is_not_found(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=theirs, function="echo", payload={"message": "s"})
    for action in (
        runtime.store.invocations.get,
        runtime.store.invocations.cancel,
        runtime.store.invocations.requeue,
    ):
        with pytest.raises(InvocationNotFound):
            action(inv.id, mine)
    assert runtime.store.invocations.get(inv.id, theirs).status == "queued"


def test_cancel_only_before_running_and_retry_only_after_failing(runtime, make_tenant):
    tenant = make_tenant()
    later = runtime.store.db.clock() + timedelta(hours=1)
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}, at=later
    )
    with pytest.raises(InvalidState):
        runtime.store.invocations.requeue(inv.id, tenant)
    assert runtime.store.invocations.cancel(inv.id, tenant).status == "cancelled"
    with pytest.raises(InvalidState):
        runtime.store.invocations.cancel(inv.id, tenant)
    requeued = runtime.store.invocations.requeue(inv.id, tenant)
    assert requeued.status == "queued" and requeued.scheduled_for is None


def test_keys_are_stored_hashed_and_revocable(runtime, make_tenant):
    tenant = make_tenant()
    view, plaintext = runtime.store.tenants.create_key(tenant, parse_scopes("invoke,read"))
    with runtime.store.db.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().one()
    assert plaintext.split("_", 2)[2] not in str(dict(stored))  # the whole secret
    principal = runtime.store.tenants.authenticate(plaintext)
    assert principal is not None and principal.tenant_id == tenant
    assert principal.has("read") and not principal.has("manage")
    # Another last character (the secret's last one is "A" one time in sixteen)
    forged = plaintext[:-1] + ("B" if plaintext[-1] != "B" else "C")
    assert runtime.store.tenants.authenticate(forged) is None
    assert runtime.store.tenants.authenticate("nonsense") is None
    runtime.store.tenants.revoke_key(view.id)
    assert runtime.store.tenants.authenticate(plaintext) is None


def test_expired_keys_do_not_authenticate(runtime, make_tenant):
    tenant = make_tenant()
    past = runtime.store.db.clock() - timedelta(seconds=1)
    _, plaintext = runtime.store.tenants.create_key(tenant, parse_scopes("read"), expires_at=past)
    assert runtime.store.tenants.authenticate(plaintext) is None


def test_a_key_by_id_gives_its_principal_only_while_active(runtime, make_tenant):
    tenant = make_tenant()
    view, _ = runtime.store.tenants.create_key(tenant, parse_scopes("read"))
    principal = runtime.store.tenants.principal(view.id)
    assert principal is not None and principal.tenant_id == tenant and principal.has("read")
    assert runtime.store.tenants.principal("000000000000") is None
    runtime.store.tenants.revoke_key(view.id)
    assert runtime.store.tenants.principal(view.id) is None
    past = runtime.store.db.clock() - timedelta(seconds=1)
    expired, _ = runtime.store.tenants.create_key(tenant, parse_scopes("read"), expires_at=past)
    assert runtime.store.tenants.principal(expired.id) is None


def test_key_state_says_revoked_before_expired():
    now = utcnow()
    later, earlier = now + timedelta(seconds=1), now - timedelta(seconds=1)
    assert key_state(None, None, now) == key_state(None, later, now) == "active"
    assert key_state(None, now, now) == key_state(None, earlier, now) == "expired"
    assert key_state(earlier, earlier, now) == "revoked"


def test_percentiles_interpolate_like_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    hundred = [float(n) for n in range(1, 101)]
    assert percentile(hundred, 0.5) == pytest.approx(50.5)
    assert percentile(hundred, 0.95) == pytest.approx(95.05)


def test_tenant_ids_and_scopes_are_validated(runtime):
    with pytest.raises(RequestRejected):
        runtime.store.tenants.create("Not_Valid")
    runtime.store.tenants.create("ok-1")
    with pytest.raises(AlreadyExists):
        runtime.store.tenants.create("ok-1")
    with pytest.raises(RequestRejected):
        parse_scopes("read,root")
