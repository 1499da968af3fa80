"""Group commit: a batch of claims and successes, each answered with its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from runtime.app import Runtime
from runtime.errors import StoreUnavailable
from runtime.settings import Settings
from runtime.store.claim_batches import ClaimRequest, SuccessRequest, write_batch
from runtime.store.claims import Claimed, Limits, NotClaimed
from runtime.store.group_commit import Failed, GroupCommitter


@pytest.fixture
def settings(backend: str, settings_for: Callable[..., Settings]) -> Settings:
    """Group commit on (it ships off): a window of 1 ms, as one would set it."""
    return settings_for(backend, group_commit_ms=1.0)


def accept(runtime: Runtime, tenant: str, n: int) -> list[str]:
    return [
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": f"m{i}"})[
            0
        ].id
        for i in range(n)
    ]


def attempts(runtime: Runtime, invocation_id: str) -> list[tuple[int, str | None, str | None]]:
    return [
        (a.number, a.worker_id, a.outcome)
        for a in runtime.store.invocations.attempts(invocation_id)
    ]


def claim_alone(runtime: Runtime, invocation_id: str, worker: str) -> Claimed:
    """Claim on the single path (a batch of one), as another worker would."""
    [row] = write_batch(runtime.store.db, [ClaimRequest(invocation_id, worker, 30)])
    assert row is not None
    return Claimed(runtime.store.invocations.get(invocation_id), row.attempts)


def test_a_batch_refuses_only_the_claims_that_lost(runtime, make_tenant):
    # Given four claimable invocations, one of them then running on another worker and
    # one already finished
    tenant = make_tenant()
    free, running, finished, last = accept(runtime, tenant, 4)
    claim_alone(runtime, running, "other")
    done = claim_alone(runtime, finished, "other")
    assert runtime.store.claims.succeed_alone(done, {"message": "x"})

    # When one batch claims all four (and the last one twice)
    requests = [ClaimRequest(i, "w1", 30) for i in (free, running, finished, last, last)]
    rows = write_batch(runtime.store.db, requests)

    # Then only the claimable ones are won, each once, with their attempt rows
    assert [row is not None for row in rows] == [True, False, False, True, False]
    assert (rows[0].id, rows[0].attempts, rows[0].worker_id) == (free, 1, "w1")
    assert (rows[3].id, rows[3].attempts, rows[3].worker_id) == (last, 1, "w1")
    assert attempts(runtime, free) == [(1, "w1", None)]
    assert attempts(runtime, last) == [(1, "w1", None)]
    # and the others are as they were
    assert attempts(runtime, running) == [(1, "other", None)]
    assert attempts(runtime, finished) == [(1, "other", "succeeded")]
    assert runtime.store.invocations.get(running).worker_id == "other"
    assert runtime.store.invocations.get(finished).status == "succeeded"


def test_a_success_batch_records_all_but_the_one_whose_lease_was_lost(runtime, make_tenant):
    # Given three attempts claimed by w1, the second then taken back by the sweep and
    # claimed again by another worker (its lease lapsed)
    tenant = make_tenant()
    ids = accept(runtime, tenant, 3)
    claims = [claim_alone(runtime, i, "w1") for i in ids]
    with runtime.store.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE invocations SET status = 'queued', worker_id = NULL WHERE id = :i"),
            {"i": ids[1]},
        )
    claim_alone(runtime, ids[1], "w2")

    # When w1's three successes are written in one batch
    requests = [
        SuccessRequest(c.invocation.id, c.attempt, "w1", {"message": f"r{n}"})
        for n, c in enumerate(claims)
    ]
    recorded = write_batch(runtime.store.db, requests)

    # Then the lost one is refused and the others are recorded, attempts closed
    assert recorded == [True, False, True]
    for n in (0, 2):
        inv = runtime.store.invocations.get(ids[n])
        assert (inv.status, inv.result) == ("succeeded", {"message": f"r{n}"})
        assert attempts(runtime, ids[n]) == [(1, "w1", "succeeded")]
    # and the retaken one still runs as w2's second attempt; w1's first stays open
    inv = runtime.store.invocations.get(ids[1])
    assert (inv.status, inv.worker_id, inv.attempts) == ("running", "w2", 2)
    assert attempts(runtime, ids[1]) == [(1, "w1", None), (2, "w2", None)]


def test_a_success_without_a_result_is_stored_as_the_single_statement_stores_it(
    runtime_with, make_tenant, runtime
):
    # Given one invocation recorded by the single path and one by a batch, both with None
    tenant = make_tenant()
    single_runtime = runtime_with(group_commit_ms=0)
    a, b = accept(runtime, tenant, 2)
    first = claim_alone(runtime, a, "w1")
    assert single_runtime.store.claims.succeed_alone(first, None)
    second = claim_alone(runtime, b, "w1")
    assert write_batch(runtime.store.db, [SuccessRequest(b, second.attempt, "w1", None)]) == [True]

    # Then the stored values are the same
    with runtime.store.db.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT id, result IS NULL AS empty FROM invocations WHERE id IN (:a, :b)"),
            {"a": a, "b": b},
        )
        assert len({row.empty for row in stored}) == 1


def test_concurrent_threads_each_get_their_own_outcome(runtime, make_tenant):
    # Given 12 invocations and 16 threads of one worker process: each of 4 invocations is
    # claimed by two threads at once
    assert runtime.settings.group_commit_ms > 0
    tenant = make_tenant()
    ids = accept(runtime, tenant, 12)
    wanted = ids + ids[:4]
    start = threading.Barrier(len(wanted))

    def claim(invocation_id: str) -> Claimed | NotClaimed:
        start.wait()
        return runtime.store.claims.claim(invocation_id, "w1", 30)

    # When they all claim at once
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        outcomes = list(pool.map(claim, wanted))

    # Then every invocation is won by exactly one thread, which got its own invocation
    won = [o for o in outcomes if isinstance(o, Claimed)]
    assert sorted(o.invocation.id for o in won) == sorted(ids)
    for invocation_id, outcome in zip(wanted, outcomes, strict=True):
        if isinstance(outcome, Claimed):
            assert (outcome.invocation.id, outcome.attempt) == (invocation_id, 1)
        else:
            assert outcome.reason == "running"

    # And when the winners record their successes at once, one lease lost meanwhile
    with runtime.store.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE invocations SET worker_id = 'w2' WHERE id = :i"), {"i": ids[5]}
        )
    finish = threading.Barrier(len(won))

    def succeed(claimed: Claimed) -> bool:
        finish.wait()
        return runtime.store.claims.succeed_alone(claimed, {"id": claimed.invocation.id})

    with ThreadPoolExecutor(max_workers=len(won)) as pool:
        recorded = dict(zip([c.invocation.id for c in won], pool.map(succeed, won), strict=True))

    # Then each thread learns its own outcome
    assert recorded == {i: i != ids[5] for i in ids}
    for invocation_id in ids:
        inv = runtime.store.invocations.get(invocation_id)
        if invocation_id == ids[5]:
            assert inv.status == "running"
        else:
            assert (inv.status, inv.result) == ("succeeded", {"id": invocation_id})


def test_a_claim_under_concurrency_limits_keeps_the_single_path(runtime, make_tenant):
    # Given a group committer that fails every batch
    tenant = make_tenant()
    [invocation_id] = accept(runtime, tenant, 1)
    group = runtime.store.claims._group
    assert group is not None

    def refuse(_requests: Sequence[Any]) -> list[Any]:
        raise AssertionError("a limited claim went through the group committer")

    group.write = refuse

    # When an invocation is claimed under a concurrency limit
    outcome = runtime.store.claims.claim(
        invocation_id, "w1", 30, tenant_id=tenant, limits=Limits(tenant=2)
    )

    # Then it is claimed on its own
    assert isinstance(outcome, Claimed)


def test_a_failed_statement_fails_its_own_requests_and_the_others_are_written(
    backend: str, runtime, make_tenant, monkeypatch: pytest.MonkeyPatch
):
    if backend != "production":
        pytest.skip("SQLite writes a batch in one transaction: it fails as a whole")
    # Given a claimable invocation and a running one, and a success statement that fails
    from runtime.store import batch_statements

    tenant = make_tenant()
    free, running = accept(runtime, tenant, 2)
    claimed = claim_alone(runtime, running, "w1")
    monkeypatch.setattr(batch_statements, "SUCCEED_BATCH", sa.text("SELECT 1 / 0"))

    # When one batch claims the first and records the second's success (asked twice)
    success = SuccessRequest(running, claimed.attempt, "w1", None)
    outcomes = write_batch(runtime.store.db, [ClaimRequest(free, "w1", 30), success, success])

    # Then the claim is written and answered; both success requests get the error
    assert outcomes[0] is not None and outcomes[0].id == free
    assert all(isinstance(o, Failed) and isinstance(o.error, Exception) for o in outcomes[1:])
    assert runtime.store.invocations.get(free).status == "running"
    assert runtime.store.invocations.get(running).status == "running"


def test_a_claim_batch_finds_its_rows_by_primary_key(backend: str, runtime, make_tenant):
    if backend != "production":
        pytest.skip("a PostgreSQL plan")
    # Given a tenant with a backlog (its invocations are what a bad plan would read)
    tenant = make_tenant()
    ids = accept(runtime, tenant, 200)
    from runtime.store import batch_statements

    # When the batch claim of 8 of them is explained
    now = runtime.store.db.clock()
    compiled = batch_statements.CLAIM_BATCH.compile(dialect=runtime.store.db.engine.dialect)
    params = compiled.construct_params(
        {"_ids": ids[:8], "_now": now, "_lease": now, "_worker": "w1"}
    )
    with runtime.store.db.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), params)
        plan = str(cursor.fetchone()[0])
        conn.connection.dbapi_connection.rollback()

    # Then it reads them through the primary key, not through the tenant's index
    assert "pk_invocations" in plan
    assert "ix_invocations_tenant_id_created_at" not in plan
    assert "'Rows Removed by Filter': 192" not in plan


def test_a_store_error_reaches_every_waiting_thread(
    backend: str, runtime_with: Callable[..., Runtime], tmp_path: Any
):
    # Given a worker process whose store cannot be reached
    from tests.unit.conftest import closed_port

    if backend == "production":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/ferry"
    else:
        url = f"sqlite:///{tmp_path / 'missing' / 'ferry.db'}"
    down = runtime_with(
        migrate=False, database_url=url, db_connect_timeout_s=1, group_commit_ms=1.0
    )
    start = threading.Barrier(6)

    def claim(n: int) -> BaseException | None:
        start.wait()
        try:
            down.store.claims.claim(f"inv-{n}", "w1", 30)
        except BaseException as ex:
            return ex
        return None

    # When six threads claim at once
    with ThreadPoolExecutor(max_workers=6) as pool:
        errors = list(pool.map(claim, range(6)))

    # Then each gets StoreUnavailable, as on the single path
    assert all(isinstance(ex, StoreUnavailable) for ex in errors), errors


def test_a_failed_batch_fails_each_request_and_the_next_batch_goes_on():
    # Given a committer whose first batch fails
    calls: list[list[int]] = []

    def write(requests: Sequence[Any]) -> list[Any]:
        calls.append(list(requests))
        if len(calls) == 1:
            raise StoreUnavailable("the store is unreachable")
        return [n * 10 for n in requests]

    committer = GroupCommitter(write, window_s=0.05)
    start = threading.Barrier(4)

    def submit(n: int) -> Any:
        start.wait()
        try:
            return committer.submit(n)
        except StoreUnavailable as ex:
            return ex

    # When four threads submit at once, then one more
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = list(pool.map(submit, range(4)))
    later = committer.submit(7)
    committer.close()

    # Then every request of the failed batch got the error; the later one its outcome
    failed = [outcome for outcome in first if isinstance(outcome, StoreUnavailable)]
    assert len(failed) == len(calls[0])
    assert all(outcome == n * 10 for n, outcome in enumerate(first) if outcome not in failed)
    assert later == 70
    assert committer.requests == 5
    assert not committer.open


def test_without_a_window_the_single_statements_are_used(runtime_with, make_tenant, runtime):
    single = runtime_with(group_commit_ms=0)
    assert single.store.claims._group is None
    [invocation_id] = accept(runtime, make_tenant(), 1)
    outcome = single.store.claims.claim(invocation_id, "w1", 30)
    assert isinstance(outcome, Claimed)
    assert single.store.claims.succeed_alone(outcome, {"message": "x"})
    assert attempts(runtime, invocation_id) == [(1, "w1", "succeeded")]


def test_once_the_committers_are_closed_claims_and_successes_take_the_single_statements(
    runtime_with, make_tenant, runtime
):
    # Given a store with group commit and success batches, whose committers were closed
    # (a stopping worker closes them)
    grouped = runtime_with(group_commit_ms=1.0, success_batch_ms=2.0)
    claims = grouped.store.claims
    [invocation_id] = accept(runtime, make_tenant(), 1)
    claims.close()

    # When a claim and its success come after that
    outcome = claims.claim(invocation_id, "w1", 30)
    assert isinstance(outcome, Claimed)
    later = claims.succeed_later(outcome, {"message": "x"})
    recorded = claims.succeed_alone(outcome, {"message": "x"})

    # Then they were written by the single statements, not refused
    assert later is None and recorded
    assert claims._group is not None and claims._group.batches == 0
    assert attempts(runtime, invocation_id) == [(1, "w1", "succeeded")]


@pytest.mark.parametrize("window_s", [0.0, 0.002])
def test_a_committer_answers_in_order_within_a_batch(window_s: float):
    committer = GroupCommitter(lambda requests: [r * 2 for r in requests], window_s=window_s)
    try:
        assert [committer.submit(n) for n in range(5)] == [0, 2, 4, 6, 8]
    finally:
        committer.close()


def _seq_scans(runtime: Runtime, table: str) -> int:
    """Sequential scans of `table` so far, with every pooled backend's counts flushed."""
    engine = runtime.store.db.engine
    # A backend reports its counts when it exits (or after up to 10 s idle).
    engine.dispose()
    time.sleep(0.5)
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = :t"), {"t": table}
            ).scalar_one()
        )


def test_a_success_batch_is_planned_for_the_table_as_it_is_now(backend: str, runtime, make_tenant):
    if backend != "production":
        pytest.skip("a PostgreSQL plan")
    # Given batches of successes written often while the attempts table was nearly empty
    # (a prepared statement gets a generic plan after five runs, made for that size)
    tenant = make_tenant()
    for invocation_id in accept(runtime, tenant, 8):
        won = claim_alone(runtime, invocation_id, "w1")
        request = SuccessRequest(invocation_id, won.attempt, "w1", None)
        assert write_batch(runtime.store.db, [request]) == [True]
    # and the table then grew to 1,500 running attempts
    ids = accept(runtime, tenant, 1500)
    claimed = [claim_alone(runtime, i, "w1") for i in ids]
    before = _seq_scans(runtime, "attempts")

    # When the successes of 80 of them are written in batches of 8
    for start in range(0, 80, 8):
        batch = [
            SuccessRequest(c.invocation.id, c.attempt, "w1", None)
            for c in claimed[start : start + 8]
        ]
        for _ in range(2):  # on the same pooled connection as the batches before
            outcomes = write_batch(runtime.store.db, batch)
        assert outcomes == [False] * 8  # the second time: already recorded

    # Then no batch read the attempts table whole
    assert _seq_scans(runtime, "attempts") == before
