"""Shared fixtures: the same runtime on embedded backends and on real PostgreSQL + Redis.

`backend` is parametrised over `embedded` (SQLite file + in-process broker) and
`production` (a fresh PostgreSQL database per test + its own Redis key namespace).
Real-service fixtures skip when the servers are unreachable locally, and fail when
`CI` is set, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import runtime.logs
from runtime.app import Runtime
from runtime.settings import Settings
from runtime.store.tenants import parse_scopes
from runtime.worker.consumer import WorkerHandle
from tests.procs import PRODUCTION_SECRET_KEY

# Tests reconfigure logging (and `capture_logs`) after module loggers have been used:
# each line must follow the configuration of the moment, not the one of its first call.
runtime.logs.CACHE_LOGGERS = False

#: The schema check: every API answer the tests get is checked against /openapi.json; the
#: fuzzers' counts, printed at the end.
pytest_plugins = ("tests.openapi_check", "tests.fuzz_report")

PG_ADMIN_URL = os.environ.get(
    "FERRY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FERRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_FUNCTIONS = "functions,tests.fixtures.functions"
PROBE_TABLE = "CREATE TABLE IF NOT EXISTS probe_executions (invocation_id varchar(36), attempt int)"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


#: Ends the reason of every skip for want of a server, so that the run can count them.
UNREACHABLE = "not reachable on 127.0.0.1"


def require_services() -> None:
    """Skip (locally) or fail (in CI) when PostgreSQL or Redis is not reachable."""
    missing = [
        name
        for name, port in (("PostgreSQL", 5432), ("Redis", 6379))
        if not _reachable("127.0.0.1", port)
    ]
    if missing:
        message = f"{' and '.join(missing)} {UNREACHABLE}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run them: see .ci/run)")
        pytest.skip(message)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Fold the skips for want of a server into one line of the summary, whatever test skipped.

    pytest's `-ra` summary folds skips by where they happened, which for a fixture's skip is
    each test's own line: one line per test. All of them get this file as their place.
    """
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and str(longrepr[2]).endswith(UNREACHABLE):
            report.longrepr = (
                __file__,
                None,
                f"{longrepr[2]}: the tests that need PostgreSQL (user postgres, trust auth) "
                "and Redis skipped (.ci/run sets both up)",
            )


def pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test's database is cloned from."""
    require_services()
    name = f"ferry_tpl_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    runtime_settings = Settings.from_env(database_url=pg_url(name), functions_module=TEST_FUNCTIONS)
    from runtime.store import Store

    store = Store.from_settings(runtime_settings)
    store.migrate()
    with store.db.engine.begin() as conn:
        conn.execute(sa.text(PROBE_TABLE))
    store.close()
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test; its URL."""
    template = request.getfixturevalue("pg_template")
    name = f"ferry_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield pg_url(name)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A Redis key namespace of one test; its keys are deleted afterwards."""
    require_services()
    import redis

    namespace = f"ferry-test-{uuid.uuid4().hex[:10]}"
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["embedded", "production"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "production":
        request.applymarker(pytest.mark.integration)
    return str(request.param)


@pytest.fixture
def settings_for(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """Build settings for `backend` with test-friendly timings, plus overrides."""

    def build(backend: str = "embedded", **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "functions_module": TEST_FUNCTIONS,
            "sweep_interval_s": 0.05,
            "worker_poll_ms": 20,
            "redispatch_after_s": 2.0,
            "lease_grace_s": 1.0,
            "worker_threads": 4,
            "log_level": "warning",
        }
        if backend == "production":
            values["database_url"] = request.getfixturevalue("pg_database")
            values["broker_url"] = REDIS_URL
            values["redis_namespace"] = request.getfixturevalue("redis_namespace")
        else:
            values["database_url"] = f"sqlite:///{tmp_path / 'ferry.db'}"
        values.update(overrides)
        if not str(values.get("broker_url", "memory://")).startswith("memory://"):
            # Production mode refuses the development secret key.
            values.setdefault("secret_key", PRODUCTION_SECRET_KEY)
        return Settings.from_env(**values)

    return build


@pytest.fixture
def settings(backend: str, settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(backend)


def prepare(runtime: Runtime) -> Runtime:
    runtime.store.migrate()
    with runtime.store.db.engine.begin() as conn:
        conn.execute(sa.text(PROBE_TABLE))
    return runtime


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A migrated runtime (no worker running)."""
    rt = prepare(Runtime(settings))
    yield rt
    rt.close()


@pytest.fixture
def worker(runtime: Runtime) -> Iterator[WorkerHandle]:
    """An in-process worker with the dispatcher's sweep, consuming every queue."""
    handle = runtime.start_worker()
    yield handle
    handle.stop(grace_s=5)


@pytest.fixture
def make_tenant(runtime: Runtime) -> Callable[..., str]:
    def create(tenant_id: str | None = None) -> str:
        tenant_id = tenant_id or f"t-{uuid.uuid4().hex[:8]}"
        runtime.store.tenants.create(tenant_id)
        return tenant_id

    return create


@pytest.fixture
def make_key(runtime: Runtime) -> Callable[..., str]:
    """Create an API key for a tenant with comma-separated scopes; returns the plaintext.

    Scopes with `admin` make an operator key, which belongs to no tenant: `tenant_id` is
    then ignored.
    """

    def create(tenant_id: str, scopes: str = "invoke,read") -> str:
        wanted = parse_scopes(scopes)
        owner = None if "admin" in wanted else tenant_id
        _view, plaintext = runtime.store.tenants.create_key(owner, wanted)
        return plaintext

    return create


def executions(runtime: Runtime, invocation_id: str | None = None) -> int:
    """How many times probe functions ran (durably counted in the store)."""
    query = "SELECT count(*) FROM probe_executions"
    params: dict[str, Any] = {}
    if invocation_id is not None:
        query += " WHERE invocation_id = :i"
        params["i"] = invocation_id
    with runtime.store.db.engine.connect() as conn:
        return int(conn.execute(sa.text(query), params).scalar_one())
