"""The tenant scope of `ctx.session`: the database's on PostgreSQL, the ORM's on SQLite.

See docs/tenancy.md for what each backend guarantees; these tests hold both to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import structlog.testing

from runtime.app import Runtime
from runtime.cli import main
from runtime.errors import TenantNotFound
from runtime.settings import Settings
from runtime.store import Database, Store
from runtime.store.models import ApiKey
from runtime.store.tenant_scope import TenantScopeEscaped, TenantScopeUnavailable
from runtime.testing import FunctionHarness
from tests.conftest import PG_ADMIN_URL, pg_url, prepare
from tests.waiting import finished, wait_for

SCOPE_FUNCTIONS = "tests.fixtures.scope_functions"


@pytest.fixture
def scoped_runtime(backend: str, settings_for: Callable[..., Settings]) -> Iterator[Runtime]:
    """A runtime of the scope probes with a worker, tenants "ours" and "theirs" with keys."""
    settings = settings_for(backend, functions_module=SCOPE_FUNCTIONS, broker_url="memory://")
    runtime = prepare(Runtime(settings))
    for tenant in ("ours", "theirs"):
        runtime.store.tenants.create(tenant)
        for _ in range(2 if tenant == "ours" else 3):
            runtime.store.tenants.create_key(tenant, frozenset({"read"}))
    runtime.store.tenants.create_key(None, frozenset({"admin"}))  # an operator key
    handle = runtime.start_worker()
    yield runtime
    handle.stop(grace_s=5)
    runtime.close()


def run(runtime: Runtime, tenant: str, function: str, payload: dict[str, Any]) -> Any:
    accepted = runtime.invocations.accept(tenant_id=tenant, function=function, payload=payload)
    return wait_for(finished(runtime, accepted.invocation.id), what=f"{function} to finish")


def their_key(runtime: Runtime) -> str:
    return runtime.store.tenants.list_keys("theirs")[0].id


def our_key(runtime: Runtime) -> str:
    return runtime.store.tenants.list_keys("ours")[0].id


def test_raw_sql_and_core_selects_count_only_the_tenants_rows_on_postgresql(
    scoped_runtime, backend
):
    # Given both tenants have invocations (their three against our one) and keys
    for _ in range(3):
        assert run(scoped_runtime, "theirs", "count_rows", {}).status == "succeeded"
    # When our function counts with raw SQL and a Core select, no tenant filter
    done = run(scoped_runtime, "ours", "count_rows", {})
    # Then on PostgreSQL it sees only our rows, whatever the form of the query
    assert done.status == "succeeded", done.error
    counts = done.result
    assert counts["orm_invocations"] == 1  # the ORM guard, on both backends
    if backend == "production":
        assert counts == {
            "invocations": 1,
            "api_keys": 2,
            "tenants": 1,
            "attempts": 1,
            "orm_invocations": 1,
        }
    else:
        # And on SQLite raw SQL and Core are not scoped, as docs/tenancy.md says
        assert counts["invocations"] == 4
        assert counts["api_keys"] == 6
        assert counts["tenants"] == 2


@pytest.mark.integration
def test_another_tenants_rows_cannot_be_changed_and_other_tables_not_read(settings_for):
    runtime = _runtime(settings_for)
    try:
        theirs = their_key(runtime)
        # When our function tries to rename, delete and fail their rows with Core and raw SQL
        done = run(runtime, "ours", "write_theirs", {"key_id": theirs, "tenant_id": "theirs"})
        assert done.status == "succeeded", done.error
        # Then no row of theirs changed, and tables a function may not use are refused
        assert done.result["outcomes"] == {
            "update_key": 0,
            "delete_key": 0,
            "update_their_invocations": "InsufficientPrivilege",
            "read_workers": "InsufficientPrivilege",
            "read_schedules": "InsufficientPrivilege",
            "insert_tenant": "InsufficientPrivilege",
        }
        assert [k.name for k in runtime.store.tenants.list_keys("theirs") if k.id == theirs] == [""]
        with pytest.raises(TenantNotFound):
            runtime.store.tenants.get("intruder")
    finally:
        runtime.close()


@pytest.mark.integration
@pytest.mark.parametrize("how", ["reset_role", "other_tenant"])
def test_leaving_the_scope_fails_the_attempt_and_rolls_its_writes_back(settings_for, how):
    runtime = _runtime(settings_for)
    try:
        mine = our_key(runtime)
        # When our function renames one of its keys, then leaves its scope on purpose
        done = run(runtime, "ours", "escape_scope", {"how": how, "key_id": mine})
        # Then the attempt fails for good and its rename is rolled back
        assert done.status == "failed"
        assert done.error["type"] == "TenantScopeEscaped"
        assert {k.name for k in runtime.store.tenants.list_keys("ours") if k.id == mine} == {""}
    finally:
        runtime.close()


def _runtime(settings_for: Callable[..., Settings]) -> Runtime:
    """The production side of `scoped_runtime` (a fixture cannot take a parameter here)."""
    settings = settings_for("production", functions_module=SCOPE_FUNCTIONS, broker_url="memory://")
    runtime = prepare(Runtime(settings))
    for tenant in ("ours", "theirs"):
        runtime.store.tenants.create(tenant)
        runtime.store.tenants.create_key(tenant, frozenset({"read"}))
    handle = runtime.start_worker()
    runtime_close = runtime.close

    def close() -> None:
        handle.stop(grace_s=5)
        runtime_close()

    runtime.close = close  # type: ignore[method-assign]
    return runtime


@pytest.mark.integration
def test_a_pooled_connection_never_keeps_a_tenants_scope(pg_database):
    # Given a store whose pool holds one connection, and two tenants with keys
    store = Store(Database(sa.create_engine(pg_database, pool_size=1, max_overflow=0)))
    try:
        for tenant, keys in (("ours", 1), ("theirs", 2)):
            store.tenants.create(tenant)
            for _ in range(keys):
                store.tenants.create_key(tenant, frozenset({"read"}))
        seen = {}
        for tenant in ("ours", "theirs", "ours"):
            # When each tenant's function session counts keys on that same connection
            session = store.db.open_session(tenant)
            with session:
                pid = session.execute(sa.text("select pg_backend_pid()")).scalar_one()
                count = len(session.execute(sa.select(ApiKey.__table__)).all())
                seen.setdefault(tenant, set()).add((pid, count))
        # Then each saw its own keys only, on one connection
        assert seen == {"ours": {(pid, 1)}, "theirs": {(pid, 2)}}
        # And a function that committed a session-level SET ROLE leaves no trace in the pool
        session = store.db.open_session("ours")
        with session:
            session.execute(sa.text("SET SESSION ROLE ferry_function"))
            session.commit()
        # Then the runtime's next use of that connection is the login role, seeing every row
        with store.db.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "select pg_backend_pid(), current_user, count(*) from api_keys group by 1, 2"
                )
            ).one()
        assert tuple(row) == (pid, "postgres", 3)
    finally:
        store.close()


@pytest.fixture
def unprivileged_database() -> Iterator[tuple[str, str]]:
    """A database owned by a fresh login role that may not create roles; (URL, role)."""
    from tests.conftest import require_services

    require_services()
    suffix = uuid.uuid4().hex[:8]
    login, database = f"ferry_app_{suffix}", f"ferry_rls_{suffix}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {login} LOGIN"))
        conn.execute(sa.text(f"CREATE DATABASE {database} OWNER {login}"))
    url = pg_url(database).replace("postgres@", f"{login}@", 1)
    yield url, login
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        conn.execute(sa.text(f"DROP ROLE IF EXISTS ferry_fn_{login[-8:]}"))
        conn.execute(sa.text(f"DROP ROLE IF EXISTS {login}"))
    admin.dispose()


@pytest.mark.integration
def test_migrate_says_what_set_up_is_missing_and_functions_are_refused_until_done(
    unprivileged_database, monkeypatch, capsys, restore_logging
):
    url, login = unprivileged_database
    role = f"ferry_fn_{login[-8:]}"
    monkeypatch.setenv("FERRY_DATABASE_URL", url)
    monkeypatch.setenv("FERRY_FUNCTION_DB_ROLE", role)
    # When a login role that may not create roles migrates a new store
    assert main(["migrate"]) == 0
    out = capsys.readouterr()
    # Then it migrated, and says the role is missing and how to add it
    assert "the store is at the newest schema" in out.out
    assert f"the role {role} does not exist" in out.err
    fix = (
        f'CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;\nGRANT {role} TO "{login}";'
    )
    assert fix in out.err
    assert main(["migrate", "--check"]) == 1
    assert fix in capsys.readouterr().err
    # And a worker says so when it starts
    runtime = Runtime(Settings.from_env(functions_module=SCOPE_FUNCTIONS))
    try:
        with structlog.testing.capture_logs() as logs:
            runtime.start_worker(sweep=False).stop(grace_s=5)
        [warning] = [e for e in logs if e["event"] == "tenant_scope_not_set_up"]
        assert warning["log_level"] == "error"
        assert warning["missing"] == [f"the role {role} does not exist"]
        # And a function's session is refused rather than left unscoped
        with pytest.raises(TenantScopeUnavailable, match=f"the role {role} does not exist"):
            runtime.store.db.open_session("ours")
    finally:
        runtime.close()
    # When the operator runs the SQL it printed, and migrates again
    admin = sa.create_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1])
    with admin.begin() as conn:
        for statement in fix.split(";\n"):
            conn.execute(sa.text(statement.rstrip(";")))
    admin.dispose()
    assert main(["migrate"]) == 0
    # Then the check passes, and the role is granted what functions need
    out = capsys.readouterr()
    assert f"functions' sessions run as {role} under row-level security" in out.out
    assert out.err == ""
    assert main(["migrate", "--check"]) == 0
    # And when a policy goes missing, the check names it and functions are refused again
    owner = sa.create_engine(url)
    with owner.begin() as conn:
        conn.execute(sa.text("DROP POLICY ferry_tenant_scope ON invocations"))
    owner.dispose()
    assert main(["migrate", "--check"]) == 1
    assert "invocations has no row-level security policy ferry_tenant_scope" in (
        capsys.readouterr().err
    )
    store = Store.from_settings(Settings.from_env())
    try:
        with pytest.raises(TenantScopeUnavailable, match="invocations has no row-level"):
            store.db.open_session("ours")
    finally:
        store.close()


def test_sqlite_migrate_says_what_the_orm_guard_covers(
    tmp_path, monkeypatch, capsys, restore_logging
):
    monkeypatch.setenv("FERRY_DATABASE_URL", f"sqlite:///{tmp_path / 'ferry.db'}")
    assert main(["migrate"]) == 0
    assert "raw SQL in a function is not scoped" in capsys.readouterr().out
    assert main(["migrate", "--check"]) == 0


@pytest.mark.integration
def test_the_harness_on_postgresql_scopes_and_checks_like_the_runtime(pg_database):
    with FunctionHarness(
        tenant_id="ours", database_url=pg_database, functions_module=SCOPE_FUNCTIONS
    ) as harness:
        harness.store.tenants.create("theirs")
        harness.store.tenants.create_key("theirs", frozenset({"read"}))
        mine, _ = harness.store.tenants.create_key("ours", frozenset({"read"}))
        # When a function counts through the harness, then leaves its scope
        assert harness.run("count_rows", {}).api_keys == 1
        with pytest.raises(TenantScopeEscaped):
            harness.run("escape_scope", {"how": "reset_role", "key_id": mine.id})
        # Then its rename is rolled back, as in a worker
        assert [k.name for k in harness.store.tenants.list_keys("ours")] == [""]
