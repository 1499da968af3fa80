"""The hot statements on psycopg's own connection (`runtime.store.driver`), PostgreSQL only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

import pytest
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.errors import StoreUnavailable
from runtime.store.claims import Claimed
from runtime.store.driver import driver_connection


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend != "production":
        pytest.skip("SQLite runs these statements through SQLAlchemy")


def test_a_claim_reads_back_as_sqlalchemy_would_give_it(runtime: Runtime, make_tenant):
    # Given an accepted invocation with a payload
    tenant = make_tenant()
    accepted, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "über ✓"}
    )

    # When a worker claims it and records its success through the driver
    claimed = runtime.store.claims.claim(accepted.id, "w1", 30)
    assert isinstance(claimed, Claimed)
    assert runtime.store.claims.succeed_alone(claimed, {"message": "done", "at": None})

    # Then the claim's row is the stored one, datetimes in UTC, JSON decoded
    stored = runtime.store.invocations.get(accepted.id)
    assert claimed.invocation.payload == stored.payload
    assert stored.payload["message"] == "über ✓"
    assert claimed.invocation.started_at is not None
    assert claimed.invocation.started_at.tzinfo == UTC
    assert claimed.invocation.created_at == stored.created_at
    assert claimed.invocation.status == "running"
    # and the result is stored as JSON, as SQLAlchemy's JSON type stores it
    assert (stored.status, stored.result) == ("succeeded", {"message": "done", "at": None})


def test_a_connection_that_died_in_the_pool_fails_once_and_is_not_reused(
    runtime_with: Callable[..., Runtime], make_tenant, runtime: Runtime
):
    # Given a store with one pooled connection, whose server process is then terminated
    small = runtime_with(db_pool_size=1, db_max_overflow=0)
    tenant = make_tenant()
    ids = [
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "x"})[
            0
        ].id
        for _ in range(2)
    ]
    with driver_connection(small.store.db.engine) as connection:
        pid = connection.info.backend_pid
    with runtime.store.db.engine.connect() as admin:
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    # When a claim runs on it, and another after it
    with pytest.raises(StoreUnavailable):
        small.store.claims.claim(ids[0], "w1", 30)
    again = small.store.claims.claim(ids[1], "w1", 30)

    # Then the first is refused as an outage and the second runs on a new connection
    assert isinstance(again, Claimed)
    with driver_connection(small.store.db.engine) as connection:
        assert connection.info.backend_pid != pid
        # and the pool's connection is back out of autocommit, as SQLAlchemy expects it
    with small.store.db.engine.raw_connection() as pooled:
        assert pooled.driver_connection.autocommit is False  # type: ignore[union-attr]


def test_an_unreachable_store_is_store_unavailable(runtime_with: Callable[..., Runtime]):
    from tests.unit.conftest import closed_port

    down = runtime_with(
        migrate=False,
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/ferry",
        db_connect_timeout_s=1,
    )
    with pytest.raises(StoreUnavailable):
        down.store.claims.claim("inv-1", "w1", 30)


def test_a_success_reads_its_attempt_by_index_before_the_table_has_statistics(
    runtime: Runtime, make_tenant
):
    # Given a new database (never analyzed) with 300 attempts
    tenant = make_tenant()
    claims = runtime.store.claims
    for _ in range(300):
        accepted, _ = runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "x"}
        )
        claimed = claims.claim(accepted.id, "w1", 30)
        assert isinstance(claimed, Claimed)

    # When the success statement is planned for the last of them
    statement = claims._driver[1]  # type: ignore[index]
    params = {
        **statement.constants,
        "_id": claimed.invocation.id,
        "_attempt": claimed.attempt,
        "_worker": "w1",
        "_now": runtime.store.db.clock(),
        "_result": None,
    }
    with driver_connection(runtime.store.db.engine) as connection:
        plan = str(connection.execute("EXPLAIN (FORMAT JSON) " + statement.sql, params).fetchone())

    # Then neither table is read whole: both rows are found by their keys
    assert "Seq Scan" not in plan, plan


def test_a_payload_with_an_integer_past_64_bits_is_stored_whole(runtime: Runtime, make_tenant):
    # Given a new invocation whose payload holds an integer orjson refuses
    import dataclasses

    from runtime.store.invocations import NewInvocation

    tenant = make_tenant()
    accepted, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}
    )
    fields = {f.name for f in dataclasses.fields(NewInvocation)}
    new = NewInvocation(
        **{
            **{name: getattr(accepted, name) for name in fields if hasattr(accepted, name)},
            "id": "big-int-invocation",
            "idempotency_key": "big-int",
            "payload": {"n": 2**70, "s": "ü"},
        }
    )

    # When the store inserts it (through the driver) and reads it back
    runtime.store.invocations.insert(new)

    # Then the payload is whole
    assert runtime.store.invocations.get("big-int-invocation").payload == {"n": 2**70, "s": "ü"}
