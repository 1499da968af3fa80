"""Fixtures for tests that run Ferry as separate processes on real Redis and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.settings import Settings
from runtime.store import Store
from runtime.store.views import AttemptView
from tests.conftest import PROBE_TABLE, REDIS_URL, TEST_FUNCTIONS, require_services
from tests.procs import PRODUCTION_SECRET_KEY, PrivatePostgres, PrivateRedis, Processes, child_env

#: Short recovery timings for every child process, so recovery happens within a test.
FAST_RECOVERY = {
    "sweep_interval_s": 0.2,
    "redispatch_after_s": 3,
    "lease_s": 3,
    "lease_grace_s": 1,
    "worker_poll_ms": 50,
    "log_level": "info",
}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Processes of one test; all killed at teardown, their logs printed if it failed."""
    processes = Processes(tmp_path)
    yield processes
    processes.close()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(processes.report())


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private, migrated PostgreSQL cluster (with the probe table) a test may stop."""
    require_services()  # the same machine set-up that runs the shared servers
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        store = Store.from_settings(Settings.from_env(database_url=server.url()))
        store.migrate()
        with store.db.engine.begin() as conn:
            conn.execute(sa.text(PROBE_TABLE))
        store.close()
        yield server
    finally:
        server.close()


@dataclasses.dataclass
class Deployment:
    """Where one test's Ferry processes store and carry work, and how to look at it."""

    database_url: str
    broker_url: str
    redis_namespace: str
    overrides: dict[str, Any]

    def settings(self, **more: Any) -> Settings:
        return Settings.from_env(
            database_url=self.database_url,
            broker_url=self.broker_url,
            redis_namespace=self.redis_namespace,
            functions_module=TEST_FUNCTIONS,
            **{"secret_key": PRODUCTION_SECRET_KEY, **self.overrides, **more},
        )

    def env(self, **more: Any) -> dict[str, str]:
        return child_env(
            database_url=self.database_url,
            broker_url=self.broker_url,
            redis_namespace=self.redis_namespace,
            **{**self.overrides, **more},
        )

    def runtime(self, **more: Any) -> Runtime:
        """An in-process runtime to accept work with (no worker)."""
        return Runtime(self.settings(**more))


def accept_echoes(deployment: Deployment, tenant: str, count: int, sleep_s: float) -> list[str]:
    """A new tenant and `count` `echo` invocations of it, each sleeping `sleep_s`; their ids."""
    runtime = deployment.runtime()
    try:
        runtime.store.tenants.create(tenant)
        return [
            runtime.invocations.accept(
                tenant_id=tenant,
                function="echo",
                payload={"message": f"m{n}", "sleep_s": sleep_s},
            )[0].id
            for n in range(count)
        ]
    finally:
        runtime.close()


@pytest.fixture
def deployment(pg_database: str, redis_namespace: str) -> Deployment:
    """A fresh database on the shared PostgreSQL and a fresh namespace on the shared Redis."""
    return Deployment(pg_database, REDIS_URL, redis_namespace, dict(FAST_RECOVERY))


class Ledger:
    """Read-only questions about a store, asked from the test process."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def statuses(self, ids: list[str]) -> dict[str, str]:
        with self.store.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id, status FROM invocations WHERE id = ANY(:ids)"), {"ids": ids}
            )
            return {row.id: row.status for row in rows}

    def sent(self, ids: list[str]) -> int:
        """How many of `ids` the store marks as sent to the broker (the rest are held)."""
        with self.store.db.engine.connect() as conn:
            query = "SELECT count(*) FROM invocations WHERE id = ANY(:ids) AND dispatched_at IS NOT NULL"
            return int(conn.execute(sa.text(query), {"ids": ids}).scalar_one())

    def total(self) -> int:
        with self.store.db.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM invocations")).scalar_one())

    def count_status(self, ids: list[str], status: str) -> int:
        return sum(1 for s in self.statuses(ids).values() if s == status)

    def executions(self) -> dict[str, int]:
        """Runs of probe functions, by invocation id (counted by the functions themselves)."""
        with self.store.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT invocation_id, count(*) AS n FROM probe_executions GROUP BY invocation_id"
                )
            )
            return {row.invocation_id: int(row.n) for row in rows}

    def attempts(self, invocation_id: str) -> list[AttemptView]:
        return self.store.invocations.attempts(invocation_id)

    def succeeded_attempts(self) -> dict[str, int]:
        with self.store.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT invocation_id, count(*) AS n FROM attempts WHERE outcome = 'succeeded' "
                    "GROUP BY invocation_id"
                )
            )
            return {row.invocation_id: int(row.n) for row in rows}

    def running_on(self, ids: list[str]) -> dict[str, str]:
        """Running invocations and the worker holding each."""
        with self.store.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, worker_id FROM invocations WHERE id = ANY(:ids) AND status = 'running'"
                ),
                {"ids": ids},
            )
            return {row.id: row.worker_id for row in rows}


@pytest.fixture
def ledger_for() -> Iterator[Callable[[str], Ledger]]:
    stores: list[Store] = []

    def build(database_url: str) -> Ledger:
        store = Store.from_settings(Settings.from_env(database_url=database_url))
        stores.append(store)
        return Ledger(store)

    yield build
    for store in stores:
        store.close()


def worker_pid(worker_id: str) -> int:
    """The pid inside a worker id (`host:pid:suffix`)."""
    return int(worker_id.split(":")[1])
