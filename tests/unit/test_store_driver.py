"""The hot statements on psycopg's own connection (`runtime.store.driver`), PostgreSQL only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg.pq import TransactionStatus

from runtime.app import Runtime
from runtime.errors import StoreUnavailable
from runtime.store import claims as claims_module
from runtime.store import kept as kept_module
from runtime.store.claim_batches import ClaimRequest, claim_params
from runtime.store.claims import Claimed, claim_statement, success_statement


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


def test_a_kept_connection_that_died_fails_once_and_is_not_reused(
    runtime_with: Callable[..., Runtime], make_tenant, runtime: Runtime
):
    # Given a store whose thread keeps a connection, whose server process is then terminated
    small = runtime_with(db_pool_size=1, db_max_overflow=0)
    tenant = make_tenant()
    ids = [
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "x"})[
            0
        ].id
        for _ in range(2)
    ]
    with small.store.db.driver_connection() as connection:
        pid = connection.info.backend_pid
    _terminate(runtime, pid)

    # When a claim runs on it, and another after it
    with pytest.raises(StoreUnavailable):
        small.store.claims.claim(ids[0], "w1", 30)
    again = small.store.claims.claim(ids[1], "w1", 30)

    # Then the first is refused as an outage and the second runs on a new connection
    assert isinstance(again, Claimed)
    with small.store.db.driver_connection() as connection:
        assert connection.info.backend_pid != pid
        assert connection.autocommit is True
    # and the engine's own pool was not touched: its connection is out of autocommit
    with small.store.db.engine.raw_connection() as pooled:
        assert pooled.driver_connection.autocommit is False  # type: ignore[union-attr]


def _terminate(runtime: Runtime, *pids: int) -> None:
    with runtime.store.db.engine.connect() as admin:
        for pid in pids:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def _backend_pid(runtime: Runtime) -> int:
    """The server process of this thread's connection, asked over it (so a dead one fails)."""
    with runtime.store.db.driver_connection() as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _in_thread(call: Callable[[], object]) -> object:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    thread.join(10)
    return out[0]


def test_a_thread_keeps_its_connection_and_another_thread_has_its_own(runtime: Runtime):
    # Given two statements in this thread, and one in another thread
    first, second = _backend_pid(runtime), _backend_pid(runtime)
    other = _in_thread(lambda: _backend_pid(runtime))

    # Then this thread ran both on one connection, and the other thread on another
    assert first == second
    assert other != first


def test_an_outage_fails_one_statement_not_one_per_thread(runtime: Runtime):
    # Given this thread and a second one, each keeping a connection, both terminated
    gate, done = threading.Event(), threading.Event()
    pids: list[int] = []
    outcome: list[object] = []

    def second_thread() -> None:
        pids.append(_backend_pid(runtime))
        gate.wait(10)
        try:
            outcome.append(_backend_pid(runtime))
        except StoreUnavailable as ex:
            outcome.append(ex)
        done.set()

    thread = threading.Thread(target=second_thread)
    thread.start()
    mine = _backend_pid(runtime)
    while not pids:
        time.sleep(0.01)
    _terminate(runtime, mine, pids[0])

    # When this thread's next statement fails on its dead connection
    with pytest.raises(StoreUnavailable):
        with runtime.store.db.driver_connection() as connection:
            connection.execute("SELECT 1")
    # and the second thread runs its next one afterwards
    gate.set()
    done.wait(10)
    thread.join(10)

    # Then the second thread was given a new connection instead of failing too
    assert outcome and isinstance(outcome[0], int), outcome
    assert outcome[0] != pids[0]


def test_an_error_inside_a_transaction_drops_the_connection_and_a_plain_error_keeps_it(
    runtime: Runtime,
):
    # Given this thread's kept connection
    pid = _backend_pid(runtime)

    # When a statement fails on a constraint of its own, in autocommit
    with pytest.raises(Exception, match="division by zero"):
        with runtime.store.db.driver_connection() as connection:
            connection.execute("SELECT 1 / 0")
    # Then the connection is kept
    assert _backend_pid(runtime) == pid

    # When an error leaves it inside a transaction
    with pytest.raises(ValueError):
        with runtime.store.db.driver_connection() as connection:
            connection.execute("BEGIN")
            raise ValueError("a bug between statements")
    # Then the next statement runs on another connection, not inside that transaction
    with runtime.store.db.driver_connection() as connection:
        assert connection.info.backend_pid != pid
        assert connection.info.transaction_status == TransactionStatus.IDLE


def test_threads_past_the_limit_use_the_pool_per_statement(
    runtime_with: Callable[..., Runtime],
):
    # Given a store whose pool holds one connection: one thread may keep one
    small = runtime_with(db_pool_size=1, db_max_overflow=1)
    kept = small.store.db._kept  # type: ignore[attr-defined]
    assert kept is not None and kept.limit == 1
    _backend_pid(small)

    # When another thread runs a statement while this one keeps its connection
    other = _in_thread(lambda: _backend_pid(small))

    # Then it ran on a connection of the engine's pool, and only one is kept
    assert isinstance(other, int)
    assert kept.kept() == 1


def test_threads_arriving_together_never_wait_for_a_connection_to_keep(
    runtime_with: Callable[..., Runtime],
):
    # Given a store whose pool holds 4 connections; a thread that waited for one would
    # wait for a minute (kept connections are not given back)
    small = runtime_with(db_pool_size=4, db_max_overflow=0, db_pool_timeout_s=60)
    kept = small.store.db._kept  # type: ignore[attr-defined]
    start = threading.Barrier(24)

    def first_statement() -> object:
        start.wait()
        try:
            return _backend_pid(small)
        except StoreUnavailable as ex:
            return ex

    # When 24 threads run their first statement at the same moment
    threads_out: list[object] = []
    threads = [
        threading.Thread(target=lambda: threads_out.append(first_statement())) for _ in range(24)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    # Then every one ran (none waited out the pool for a place to keep one), and no more
    # than the pool's size keep one
    assert len(threads_out) == 24
    assert all(isinstance(out, int) for out in threads_out), threads_out
    assert kept.kept() <= 4


def test_a_connection_kept_past_its_refresh_time_is_handed_back_and_taken_again(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
):
    # Given a kept connection, and the refresh time passed
    kept = runtime.store.db._kept  # type: ignore[attr-defined]
    _backend_pid(runtime)
    before = kept._local.kept
    monkeypatch.setattr(kept_module, "REFRESH_S", 0.0)

    # When the thread runs its next statement
    _backend_pid(runtime)

    # Then it holds a connection taken anew, and still only one
    assert kept._local.kept is not before
    assert kept.kept() == 1


def test_a_thread_with_the_ident_of_an_ended_one_gives_that_ones_connection_back(
    runtime: Runtime,
):
    # Given a connection still counted for this thread's ident, kept by a thread that ended
    # (the system reuses idents)
    kept = runtime.store.db._kept  # type: ignore[attr-defined]
    given_back: list[bool] = []
    ended = SimpleNamespace(
        pooled=SimpleNamespace(
            driver_connection=SimpleNamespace(autocommit=True),
            close=lambda: given_back.append(True),
        )
    )
    kept._kept[threading.get_ident()] = ended

    # When this thread takes its own
    _backend_pid(runtime)

    # Then the ended thread's connection went back to its pool, and one is kept
    assert given_back == [True]
    assert kept.kept() == 1


def test_dispose_gives_every_kept_connection_back(runtime_with: Callable[..., Runtime]):
    # Given connections kept by two threads
    store = runtime_with()
    _backend_pid(store)
    _in_thread(lambda: _backend_pid(store))
    kept = store.store.db._kept  # type: ignore[attr-defined]
    assert kept.kept() == 2

    # When the database is disposed
    store.store.db.dispose()

    # Then none is kept, and a later statement takes a new one
    assert kept.kept() == 0
    assert isinstance(_backend_pid(store), int)


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
    statement = success_statement(runtime.store.db)
    params = {
        **statement.constants,
        "_id": claimed.invocation.id,
        "_attempt": claimed.attempt,
        "_worker": "w1",
        "_now": runtime.store.db.clock(),
        "_result": None,
    }
    with runtime.store.db.driver_connection() as connection:
        plan = str(connection.execute("EXPLAIN (FORMAT JSON) " + statement.sql, params).fetchone())

    # Then neither table is read whole: both rows are found by their keys
    assert "Seq Scan" not in plan, plan


def _claim_setting(runtime: Runtime, invocation_id: str, *, synchronous_commit: bool) -> str:
    """`synchronous_commit` inside a transaction that ran the claim statement, and rolled back."""
    statement = claim_statement(runtime.store.db, synchronous_commit=synchronous_commit)
    with runtime.store.db.engine.raw_connection() as pooled:
        connection: Any = pooled.driver_connection
        now = runtime.store.db.clock()
        row = statement.first(connection, claim_params(ClaimRequest(invocation_id, "w1", 30), now))
        assert row is not None and row["id"] == invocation_id
        inside = connection.execute("SHOW synchronous_commit").fetchone()[0]
        connection.rollback()
        after = connection.execute("SHOW synchronous_commit").fetchone()[0]
        connection.rollback()
    # The setting is the claim's transaction's alone: the connection's next one waits again.
    assert after == "on"
    return str(inside)


def test_a_claims_commit_does_not_wait_for_the_disk_unless_asked(runtime: Runtime, make_tenant):
    # Given an accepted invocation
    tenant = make_tenant()
    accepted, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}
    )

    # When the claim statement runs in a transaction, by default and when asked to wait
    # Then the default turns synchronous_commit off for that transaction only, and the
    # other leaves it on
    assert _claim_setting(runtime, accepted.id, synchronous_commit=False) == "off"
    assert _claim_setting(runtime, accepted.id, synchronous_commit=True) == "on"


def test_a_claim_leaves_the_kept_connection_waiting_for_the_disk(runtime: Runtime, make_tenant):
    # Given a claim run on this thread's kept connection (in autocommit)
    tenant = make_tenant()
    accepted, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}
    )
    assert isinstance(runtime.store.claims.claim(accepted.id, "w1", 30), Claimed)

    # Then the next statement on that connection (a success, say) commits as it waits
    with runtime.store.db.driver_connection() as connection:
        assert connection.execute("SHOW synchronous_commit").fetchone()[0] == "on"


@pytest.mark.parametrize("wait", [False, True])
def test_the_claim_synchronous_commit_setting_reaches_the_claims_statement(
    runtime_with: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch, wait: bool
):
    # Given the store's claim statement builder, watched
    asked: list[bool] = []
    original = claims_module.claim_statement

    def watched(db: Any, *, synchronous_commit: bool = False) -> Any:
        asked.append(synchronous_commit)
        return original(db, synchronous_commit=synchronous_commit)

    monkeypatch.setattr(claims_module, "claim_statement", watched)

    # When a runtime is built with FERRY_CLAIM_SYNCHRONOUS_COMMIT set
    runtime_with(claim_synchronous_commit=wait)

    # Then its claims were built with it
    assert asked == [wait]


def test_a_claim_a_database_crash_forgot_runs_again_and_its_attempt_records_nothing(
    runtime: Runtime, make_tenant
):
    # Given an invocation sent to the broker and claimed by one worker
    tenant = make_tenant()
    accepted, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}
    )
    engine = runtime.store.db.engine
    with engine.connect() as connection:
        before = connection.execute(
            sa.text("SELECT * FROM invocations WHERE id = :id"), {"id": accepted.id}
        ).one()
    forgotten = runtime.store.claims.claim(accepted.id, "w1", 30)
    assert isinstance(forgotten, Claimed)

    # When a crash forgets the claim before its WAL reached the disk: the row as it was,
    # no attempt row
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE invocations SET status = :status, attempts = :attempts,"
                " worker_id = :worker_id, started_at = :started_at,"
                " lease_expires_at = :lease_expires_at WHERE id = :id"
            ),
            before._asdict(),
        )
        connection.execute(
            sa.text("DELETE FROM attempts WHERE invocation_id = :id"), {"id": accepted.id}
        )

    # Then the attempt that ran under it records nothing
    assert runtime.store.claims.succeed_alone(forgotten, {"message": "first"}) is False
    # and the sweep sends the invocation again, and another worker's claim runs it once
    sent = runtime.store.sweep.take_dispatchable(redispatch_after_s=0)
    assert [item.id for item in sent] == [accepted.id]
    again = runtime.store.claims.claim(accepted.id, "w2", 30)
    assert isinstance(again, Claimed)
    assert again.attempt == forgotten.attempt
    assert runtime.store.claims.succeed_alone(again, {"message": "second"}) is True
    stored = runtime.store.invocations.get(accepted.id)
    assert (stored.status, stored.result) == ("succeeded", {"message": "second"})
