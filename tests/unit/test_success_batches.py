"""Successes in batches: a worker thread hands its success over and goes on (PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from runtime.app import Runtime
from runtime.errors import StoreUnavailable
from runtime.settings import Settings
from runtime.store.claim_batches import (
    OUTAGE_BACKOFF_S,
    write_riding_outages,
)
from runtime.store.claims import Claimed
from runtime.store.group_commit import Failed, GroupCommitter
from runtime.worker.consumer import WorkerHandle
from tests.waiting import finished, wait_for


@pytest.fixture
def settings(backend: str, settings_for: Callable[..., Settings]) -> Settings:
    """A window long enough that a test sees the success wait for it."""
    return settings_for(backend, success_batch_ms=50.0)


def accept_and_claim(runtime: Runtime, tenant: str, n: int, worker: str = "w1") -> list[Claimed]:
    claimed = []
    for i in range(n):
        inv, _ = runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": f"m{i}"}
        )
        won = runtime.store.claims.claim(inv.id, worker, 30)
        assert isinstance(won, Claimed)
        claimed.append(won)
    return claimed


def test_a_success_handed_over_is_recorded_with_the_others_of_its_window(
    backend: str, runtime: Runtime, make_tenant
):
    claims = runtime.store.claims
    if backend != "production":
        # SQLite writes one transaction at a time: nothing to share, nothing handed over.
        [claimed] = accept_and_claim(runtime, make_tenant(), 1)
        assert claims.succeed_later(claimed, {"message": "x"}) is None
        return
    # Given three running attempts
    first, second, third = accept_and_claim(runtime, make_tenant(), 3)

    # When their successes are handed over
    futures = [claims.succeed_later(c, {"message": "ok"}) for c in (first, second, third)]

    # Then nobody waited: they are still running, and all are recorded together
    assert all(f is not None and not f.done() for f in futures)
    assert runtime.store.invocations.get(first.invocation.id).status == "running"
    assert [f.result(timeout=5) for f in futures if f is not None] == [True, True, True]
    assert claims._later is not None and claims._later.batches == 1
    for claimed in (first, second, third):
        done = runtime.store.invocations.get(claimed.invocation.id)
        assert (done.status, done.result) == ("succeeded", {"message": "ok"})
        [attempt] = runtime.store.invocations.attempts(claimed.invocation.id)
        assert attempt.outcome == "succeeded"


def test_a_batch_refuses_only_the_success_whose_lease_was_lost(
    backend: str, runtime: Runtime, make_tenant
):
    if backend != "production":
        pytest.skip("successes are batched on PostgreSQL only")
    # Given two running attempts, one of which another worker has since taken over
    kept, lost = accept_and_claim(runtime, make_tenant(), 2)
    runtime.store.db.engine.dispose()
    with runtime.store.db.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE invocations SET worker_id = 'w2' WHERE id = %s", (lost.invocation.id,)
        )
    claims = runtime.store.claims

    # When both successes go in one batch
    futures = [claims.succeed_later(c, {"message": "mine"}) for c in (kept, lost)]

    # Then only the one whose lease is still ours is recorded
    assert [f.result(timeout=5) for f in futures if f is not None] == [True, False]
    assert runtime.store.invocations.get(kept.invocation.id).status == "succeeded"
    assert runtime.store.invocations.get(lost.invocation.id).status == "running"


def test_a_success_waiting_for_its_batch_is_logged_and_counted_once_written(
    backend: str, runtime: Runtime, worker: Any, make_tenant
):
    # Given a worker (its successes batched on PostgreSQL, written at once on SQLite)
    with capture_logs() as logs:
        # When an invocation runs
        inv, _ = runtime.invocations.accept(
            tenant_id=make_tenant(), function="echo", payload={"message": "x"}
        )
        done = wait_for(finished(runtime, inv.id), what="echo to finish")
        wait_for(
            lambda: [e for e in logs if e["event"] == "invocation_succeeded"],
            what="the success to be logged",
        )
    # Then it is recorded, and logged once with its invocation's context
    assert done.status == "succeeded"
    [entry] = [e for e in logs if e["event"] == "invocation_succeeded"]
    assert entry["invocation_id"] == inv.id


def _flaky_writer(failures: list[Any]) -> tuple[Callable[..., list[Any]], list[list[int]]]:
    """A writer that answers each call with the next of `failures` (an exception to raise,
    indexes to fail as an outage, or None to write all); the requests of each call."""
    calls: list[list[int]] = []

    def write(_db: Any, requests: Sequence[int]) -> list[Any]:
        calls.append(list(requests))
        plan = failures.pop(0) if failures else None
        if isinstance(plan, BaseException):
            raise plan
        down = Failed(StoreUnavailable("the store connection was lost"))
        return [down if plan and n in plan else n * 10 for n in requests]

    return write, calls


def test_successes_are_written_again_after_an_outage_until_each_is_recorded():
    # Given a store that is down for the first try and loses one row of the second
    write, calls = _flaky_writer([StoreUnavailable("the store is unreachable"), {2}])
    pauses: list[float] = []

    # When a batch of three is written
    outcomes = write_riding_outages(SimpleNamespace(), [1, 2, 3], write=write, sleep=pauses.append)

    # Then each try after a pause writes only what is still unwritten
    assert outcomes == [10, 20, 30]
    assert calls == [[1, 2, 3], [1, 2, 3], [2]]
    assert pauses == list(OUTAGE_BACKOFF_S[:2])


def test_a_success_the_store_never_takes_fails_its_future_after_the_last_pause():
    # Given a store that stays down
    write, calls = _flaky_writer([StoreUnavailable("down")] * 100)
    pauses: list[float] = []

    # When a batch is written
    [outcome] = write_riding_outages(SimpleNamespace(), [1], write=write, sleep=pauses.append)

    # Then it was tried after every pause, and then given up with the outage's error
    assert pauses == list(OUTAGE_BACKOFF_S)
    assert len(calls) == len(OUTAGE_BACKOFF_S) + 1
    assert isinstance(outcome, Failed) and isinstance(outcome.error, StoreUnavailable)


def test_an_error_that_is_not_an_outage_is_not_tried_again():
    write, calls = _flaky_writer([RuntimeError("a bug")])
    with pytest.raises(RuntimeError):
        write_riding_outages(SimpleNamespace(), [1], write=write, sleep=lambda _s: None)
    assert calls == [[1]]


def test_a_committer_answers_a_handed_over_request_without_making_its_caller_wait():
    # Given a committer whose writes wait for a signal
    release = threading.Event()

    def write(requests: Sequence[int]) -> list[Any]:
        release.wait(timeout=5)
        return [Failed(ValueError("odd")) if n % 2 else n * 2 for n in requests]

    committer = GroupCommitter(write, window_s=0.001, sleep_through_window=True)
    try:
        # When two requests are handed over
        futures = [committer.submit_later(n) for n in (2, 3)]
        # Then the callers have their futures before anything is written
        assert not any(f.done() for f in futures)
        release.set()
        # and each future gets its own outcome, or its own error
        assert futures[0].result(timeout=5) == 4
        assert isinstance(futures[1].exception(timeout=5), ValueError)
    finally:
        committer.close()


def test_a_stopping_worker_writes_its_waiting_successes_before_it_releases_its_leases():
    # Given a worker handle (its parts fakes that note the order of calls)
    calls: list[str] = []
    worker = SimpleNamespace(stop=lambda timeout: calls.append("threads stopped"), workers=[])
    leases = SimpleNamespace(
        stop=lambda: calls.append("renewals stopped"),
        release_all=lambda: calls.append("leases released"),
    )
    claims = SimpleNamespace(close=lambda: calls.append("successes written"))
    handle = WorkerHandle(worker, None, None, leases, 0.01, claims=claims)  # type: ignore[arg-type]

    # When it stops
    handle.stop(grace_s=1)

    # Then the successes still waiting are written before the leases are released: one
    # recorded after its lease ended would be taken back by the sweep and run again
    assert calls.index("successes written") < calls.index("leases released")
    assert calls.index("threads stopped") < calls.index("successes written")


def test_a_success_waiting_for_its_batch_keeps_its_lease_until_written():
    # Given the claim middleware after an attempt whose success waits for its batch
    import concurrent.futures

    from runtime.context import current_claim, recorded_outcome
    from runtime.worker.middleware.claim import ClaimMiddleware

    dropped: list[Any] = []
    leases = SimpleNamespace(options=SimpleNamespace(lease_s=30), drop=dropped.append)
    middleware = ClaimMiddleware(SimpleNamespace(), "w-1", leases, None)  # type: ignore[arg-type]
    claimed = SimpleNamespace(invocation=SimpleNamespace(id="inv-1"), attempt=1)
    written: concurrent.futures.Future[bool] = concurrent.futures.Future()
    current_claim.set(claimed)  # type: ignore[arg-type]
    recorded_outcome.set(written)

    # When the message's processing ends
    middleware.after_process_message(None, None)  # type: ignore[arg-type]

    # Then the lease is still renewed (during an outage the batch may wait many leases'
    # length; the sweep would take the attempt back and run it again)
    assert dropped == []
    # until the batch is written
    written.set_result(True)
    assert dropped == [claimed]
    assert recorded_outcome.get() is None and current_claim.get() is None
