"""Failures of an attempt: what is never retried, and an outcome recorded whatever happens.

- an error that cannot succeed on a retry (`RequestRejected`, wherever it is raised) fails
  the invocation after one attempt;
- the outcome is recorded outside the function's time limit, so a `TimeLimitExceeded`
  cannot cut the recording off;
- when the store fails while a failure is recorded, the attempt's real error is kept:
  recorded once the store answers again, and logged with the invocation id if it never does.
"""

from __future__ import annotations

import time
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from runtime.errors import (
    AlreadyExists,
    BadRequest,
    BrokerUnavailable,
    FunctionNotFound,
    IdempotencyConflict,
    InputInvalid,
    InvalidState,
    InvocationNotFound,
    Permanent,
    Retryable,
    StoreUnavailable,
    TenantSuspended,
)
from runtime.registry import Function
from runtime.store import models
from runtime.worker.execution import classify
from tests.conftest import executions
from tests.fixtures.functions.probes import FlakyOut, flaky
from tests.waiting import finished, wait_for


def validation_error() -> pydantic.ValidationError:
    try:
        FlakyOut.model_validate({"attempt": "not a number"})
    except pydantic.ValidationError as ex:
        return ex
    raise AssertionError("the model accepted a bad value")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InputInvalid(errors=[{"loc": ["x"], "msg": "bad"}]), "permanent"),
        (FunctionNotFound(), "permanent"),
        (InvocationNotFound(), "permanent"),
        (IdempotencyConflict(), "permanent"),
        (InvalidState(), "permanent"),
        (BadRequest(), "permanent"),
        (AlreadyExists(), "permanent"),
        (Permanent(), "permanent"),
        (validation_error(), "permanent"),
        # A suspended tenant is resumed; its retries wait unclaimed until then.
        (TenantSuspended(), "retry"),
        (StoreUnavailable(), "retry"),
        (BrokerUnavailable(), "retry"),
        (Retryable(), "retry"),
        (ValueError("anything else"), "retry"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_errors_a_retry_cannot_fix_are_permanent(error, kind):
    function = Function(spec=flaky, max_retries=3, min_backoff=0.05, max_backoff=0.2, timeout=10)
    assert classify(function, error) == kind


@pytest.mark.parametrize(
    ("how", "error_type"),
    [
        ("input_invalid", "InputInvalid"),
        ("unknown_function", "FunctionNotFound"),
        ("bad_child_input", "InputInvalid"),
        ("key_conflict", "IdempotencyConflict"),
    ],
)
def test_a_rejected_request_inside_a_handler_fails_after_one_attempt(
    runtime, worker, make_tenant, how, error_type
):
    # Given a function allowed 3 retries that raises, or makes ctx.invoke raise, a rejection
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="rejected", payload={"how": how})
    # When it runs
    done = wait_for(finished(runtime, inv.id), what=f"rejected ({how}) to finish")
    # Then it failed for good after one attempt, with the rejection as its error
    assert done.status == "failed" and done.attempts == 1
    assert done.error["type"] == error_type
    assert executions(runtime, inv.id) == 1
    [attempt] = runtime.store.invocations.attempts(inv.id)
    assert attempt.outcome == "failed"


def test_a_stored_payload_that_no_longer_validates_fails_after_one_attempt(runtime, make_tenant):
    # Given an accepted invocation whose stored input no longer fits the function's model
    # (say the model changed in a deploy since it was accepted)
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "x"})
    with runtime.store.db.engine.begin() as conn:
        conn.execute(
            sa.update(models.Invocation)
            .where(models.Invocation.id == inv.id)
            .values(payload={"message": ""})
        )
    # When a worker runs it
    handle = runtime.start_worker()
    try:
        done = wait_for(finished(runtime, inv.id))
    finally:
        handle.stop(grace_s=5)
    # Then it failed after one attempt, without running the handler
    assert done.status == "failed" and done.attempts == 1
    assert done.error["type"] == "InputInvalid"
    assert executions(runtime, inv.id) == 0


def test_a_time_limit_passing_while_the_outcome_is_recorded_does_not_interrupt_it(
    runtime, worker, make_tenant, monkeypatch
):
    # Given `slow` (timeout 1 s, no retries) and a store that takes 1.5 s to record success,
    # busy in Python code, where an asynchronous TimeLimitExceeded would land
    record = runtime.store.claims.succeed_alone

    def slow_record(*args: Any, **kwargs: Any) -> bool:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            sum(range(100))
        return record(*args, **kwargs)

    monkeypatch.setattr(runtime.store.claims, "succeed_alone", slow_record)
    tenant = make_tenant()
    # When the handler returns at once and the recording outlasts the function's timeout
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="slow", payload={"seconds": 0})
    done = wait_for(finished(runtime, inv.id))
    # Then the success is recorded: the time limit covered the handler, not the recording
    assert done.status == "succeeded" and done.attempts == 1
    [attempt] = runtime.store.invocations.attempts(inv.id)
    assert attempt.outcome == "succeeded"


def failing_store(runtime, monkeypatch, *, failures: int) -> list[str]:
    """Make recording a failure raise StoreUnavailable `failures` times; the calls seen."""
    fail = runtime.store.claims.fail
    calls: list[str] = []

    def flaky_fail(*args: Any, **kwargs: Any) -> str | None:
        calls.append("fail")
        if len(calls) <= failures:
            raise StoreUnavailable("the store connection was lost")
        return fail(*args, **kwargs)

    monkeypatch.setattr(runtime.store.claims, "fail", flaky_fail)
    monkeypatch.setattr(runtime.executor, "record_backoff_s", (0.01, 0.01, 0.01))
    return calls


def test_a_failure_is_recorded_once_the_store_answers_again(
    runtime, worker, make_tenant, monkeypatch
):
    # Given a store that fails the first two tries to record the failure
    calls = failing_store(runtime, monkeypatch, failures=2)
    tenant = make_tenant()
    with capture_logs() as logs:
        # When an attempt fails for good
        inv, _ = runtime.invocations.accept(
            tenant_id=tenant, function="flaky", payload={"permanent": True}
        )
        done = wait_for(finished(runtime, inv.id))
    # Then its own error is recorded on the third try, not a WorkerLost later
    assert done.status == "failed" and done.attempts == 1
    assert done.error == {"type": "Permanent", "message": "bad request upstream"}
    assert calls == ["fail"] * 3
    retried = [e for e in logs if e["event"] == "outcome_record_retrying"]
    assert len(retried) == 2 and all(e["invocation_id"] == inv.id for e in retried)
    assert not [e for e in logs if e["event"] == "outcome_not_recorded"]


def test_a_failure_the_store_never_takes_is_logged_with_the_real_error(
    runtime, worker, make_tenant, monkeypatch
):
    # Given a store that fails every try to record a failure
    failing_store(runtime, monkeypatch, failures=1_000)
    tenant = make_tenant()
    with capture_logs() as logs:
        # When an attempt fails
        inv, _ = runtime.invocations.accept(
            tenant_id=tenant, function="flaky", payload={"permanent": True}
        )
        wait_for(
            lambda: [e for e in logs if e["event"] == "outcome_not_recorded"],
            what="the unrecorded outcome to be logged",
        )
    # Then the attempt's own error is logged at error level, with the invocation id and
    # the exception itself (rendered with its traceback), before the attempt is left to
    # the sweep
    [entry] = [e for e in logs if e["event"] == "outcome_not_recorded"]
    assert entry["log_level"] == "error"
    assert entry["invocation_id"] == inv.id and entry["attempt"] == 1
    assert entry["error_type"] == "Permanent" and entry["error"] == "bad request upstream"
    assert isinstance(entry["exc_info"], Permanent)
    assert "lost" in entry["store_error"]
    # And the invocation waits, running, for its lease to expire
    assert runtime.store.invocations.get(inv.id).status == "running"


def test_a_recording_that_fails_for_another_reason_is_not_tried_again(
    runtime, worker, make_tenant, monkeypatch
):
    # Given a store whose recording fails with an error that is not an outage
    calls: list[str] = []

    def broken_fail(*args: Any, **kwargs: Any) -> str | None:
        calls.append("fail")
        raise RuntimeError("a bug in the store")

    monkeypatch.setattr(runtime.store.claims, "fail", broken_fail)
    tenant = make_tenant()
    with capture_logs() as logs:
        inv, _ = runtime.invocations.accept(
            tenant_id=tenant, function="flaky", payload={"permanent": True}
        )
        wait_for(lambda: [e for e in logs if e["event"] == "outcome_not_recorded"])
    # Then it was tried once, and the attempt's own error is logged beside the store's
    [entry] = [e for e in logs if e["event"] == "outcome_not_recorded"]
    assert calls == ["fail"]
    assert entry["invocation_id"] == inv.id and isinstance(entry["exc_info"], Permanent)
    assert entry["store_error"] == "RuntimeError: a bug in the store"
