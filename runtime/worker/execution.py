"""The unit of work of one attempt: run the handler, then record the outcome.

This runs as the Dramatiq actor's body, after the claim middleware won the invocation.
Recording happens here, not in an `after_process_message` hook, because Dramatiq only
logs exceptions raised in "after" hooks: an outcome that must be written cannot live
there. Only the handler (with its input and output validation) runs under the function's
time limit (`runtime.worker.time_limit`); the recording comes after it, so a
`TimeLimitExceeded` cannot cut it off. While the store is unavailable the recording is
tried again for a while; if it never lands, the attempt's error is logged (error level,
with its traceback and the invocation id) before the attempt is left to the sweep.

A success that the function's unit of work does not carry is handed to the store's
batch of successes (`Claims.succeed_later`, on PostgreSQL) and the thread goes on to its
next message: its log line and its metrics follow when the batch is written. Until then
the attempt is `running` under its lease, as it was while the handler ran; a process
killed meanwhile leaves it to the sweep like any attempt it ran (its message is acked, so
the lease is the way back, and the success statement still checks the lease).

Retries are Ferry's too, not Dramatiq's `Retries` middleware: the next attempt is a row
in the store (`retrying`, `scheduled_for`) that the sweep sends when due, so a Redis
restart or a killed worker cannot lose it.
"""

from __future__ import annotations

import concurrent.futures
import enum
import functools
import random
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic
import structlog
from dramatiq.middleware.time_limit import TimeLimitExceeded

from runtime.context import (
    Context,
    SecretSource,
    current_claim,
    current_context,
    recorded_outcome,
)
from runtime.errors import FerryError, Retryable, StoreUnavailable
from runtime.outbound import OutboundPolicy
from runtime.registry import Function
from runtime.secrets.values import scrub, scrub_json
from runtime.store.claim_batches import OUTAGE_BACKOFF_S
from runtime.store.db import translate_errors
from runtime.worker.time_limit import TimeLimits

if TYPE_CHECKING:
    from runtime.services.invocations import InvocationService
    from runtime.store import Store
    from runtime.store.claims import Claimed

log = structlog.get_logger("ferry.execution")

T = TypeVar("T")


class _NotRecorded(enum.Enum):
    """The store stayed unavailable: the outcome was not written."""

    NOT_RECORDED = "not_recorded"


_NOT_RECORDED = _NotRecorded.NOT_RECORDED


def backoff_s(function: Function, retry_number: int, rand: Callable[[], float]) -> float:
    """Exponential backoff with jitter: between half and all of min * 2^(n-1), capped."""
    ceiling = min(function.max_backoff, function.min_backoff * 2.0 ** (retry_number - 1))
    return float(ceiling) * (0.5 + rand() / 2)


def classify(function: Function, error: BaseException) -> str:
    """`timed_out`, `retry` or `permanent` for an exception an attempt ended with."""
    if isinstance(error, TimeLimitExceeded):
        return "timed_out"
    spec = function.spec
    if cannot_succeed_on_retry(error) or isinstance(error, spec.permanent_on):
        return "permanent"
    if isinstance(error, Retryable):
        return "retry"
    if spec.retry_on and not isinstance(error, spec.retry_on):
        return "permanent"
    return "retry"


def cannot_succeed_on_retry(error: BaseException) -> bool:
    """The error tree says so (`FerryError.permanent`), or the output failed its model.

    Wherever such an error is raised (the stored payload, `ctx.invoke`, the handler's own
    call to a service), a retry would run into it again.
    """
    if isinstance(error, FerryError):
        return error.permanent
    return isinstance(error, pydantic.ValidationError)


#: Pauses between tries to record an outcome while the store is unavailable (about 15 s
#: in all, to ride out a database restart or failover).
RECORD_BACKOFF_S = OUTAGE_BACKOFF_S


class Executor:
    def __init__(
        self,
        store: Store,
        invocations: InvocationService,
        *,
        secrets: SecretSource,
        outbound: OutboundPolicy | None = None,
        rand: Callable[[], float] = random.random,
        time_limits: TimeLimits | None = None,
        record_backoff_s: Sequence[float] = RECORD_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.invocations = invocations
        self.secrets = secrets
        self.outbound = outbound
        self.rand = rand
        self.time_limits = time_limits or TimeLimits()
        self.record_backoff_s = tuple(record_backoff_s)
        self.sleep = sleep

    def actor_body(self, function: Function) -> Callable[[str], None]:
        def run(invocation_id: str) -> None:
            self.run(function, invocation_id)

        run.__name__ = function.name
        run.__qualname__ = function.name
        run.__module__ = function.spec.module
        return run

    def run(self, function: Function, invocation_id: str) -> None:
        """Run the attempt under its function's time limit, then record its outcome."""
        claimed = current_claim.get()
        if claimed is None or claimed.invocation.id != invocation_id:
            raise RuntimeError("an attempt ran without its claim; is the claim middleware missing?")
        ctx = Context.for_claim(
            claimed,
            store=self.store,
            invocations=self.invocations,
            secrets=self.secrets,
            declared_secrets=function.spec.secrets,
            outbound=self.outbound,
        )
        token = current_context.set(ctx)
        try:
            ctx.log.info("attempt_started")
            try:
                result = self.time_limits.run(
                    function.timeout, lambda: self._attempt(function, claimed, ctx)
                )
            except (Exception, TimeLimitExceeded) as ex:
                # No time limit is armed from here on: the recording runs to its end.
                session = ctx.close_session()
                if session is not None:
                    session.close()
                self._record_failure(function, claimed, ctx, ex)
                return
            self._record_success(function, claimed, ctx, result)
        finally:
            current_context.reset(token)

    @staticmethod
    def _attempt(function: Function, claimed: Claimed, ctx: Context) -> dict[str, Any] | None:
        payload = function.validate_input(claimed.invocation.payload)
        output = function.spec.handler(ctx, payload)
        return function.dump_output(output)

    def _record_success(
        self, function: Function, claimed: Claimed, ctx: Context, result: dict[str, Any] | None
    ) -> None:
        # A function that returns a secret's value (say, echoing a request it made) must
        # not store it: the result is kept and shown like the rest of the invocation.
        result = scrub_json(result, ctx.secrets_in_use())
        session = ctx.close_session()
        if session is None:
            # The function wrote nothing through ctx.session: record on a plain connection,
            # without an ORM unit of work. A lost lease updates nothing, so commit is safe.
            later = self.store.claims.succeed_later(claimed, result)
            if later is not None:
                later.add_done_callback(functools.partial(self._success_written, ctx))
                recorded_outcome.set(later)
                return
            recorded = self._store_write(
                ctx, lambda: self.store.claims.succeed_alone(claimed, result)
            )
        else:
            try:
                with translate_errors(), session:
                    self.store.db.leave_function_scope(session)
                    recorded = self.store.claims.succeed(session, claimed, result)
                    if recorded:
                        session.commit()
                    else:
                        session.rollback()
            except Exception as ex:
                # The handler's writes are rolled back with its unit of work, so the attempt
                # failed with this error (if the commit did land, the lease is no longer
                # ours and recording the failure changes nothing).
                self._record_failure(function, claimed, ctx, ex)
                return
        if recorded is _NOT_RECORDED:
            return
        if recorded:
            recorded_outcome.set(("succeeded", "succeeded"))
        self._log_success(ctx, recorded)

    def _success_written(self, ctx: Context, later: concurrent.futures.Future[bool]) -> None:
        """The batch with this success was written (runs in the committer's thread)."""
        error = later.exception()
        if error is None:
            self._log_success(ctx, later.result())
        else:
            self._log_not_recorded(ctx, error, None)

    @staticmethod
    def _log_success(ctx: Context, recorded: bool) -> None:
        if recorded:
            ctx.log.info("invocation_succeeded")
        else:
            # Another worker took over after our lease expired; its outcome counts.
            ctx.log.warning("lease_lost_result_discarded")

    def _record_failure(
        self, function: Function, claimed: Claimed, ctx: Context, error: BaseException
    ) -> None:
        kind = classify(function, error)
        retries_used = claimed.attempt - claimed.invocation.budget_start
        retry_at = None
        if kind != "permanent" and retries_used <= function.max_retries:
            delay = backoff_s(function, retries_used, self.rand)
            if isinstance(error, Retryable) and error.delay_s is not None:
                delay = error.delay_s
            retry_at = self.store.db.clock() + timedelta(seconds=delay)
        outcome = "timed_out" if kind == "timed_out" else ("retrying" if retry_at else "failed")
        # Secret values the attempt read never reach the store, the API or the dashboard.
        secrets = ctx.secrets_in_use()
        message = scrub(str(error) or type(error).__name__, secrets)
        details = {"type": type(error).__name__, "message": message}
        trace = scrub("".join(traceback.format_exception(error)), secrets)
        status = self._store_write(
            ctx,
            lambda: self.store.claims.fail(
                claimed, outcome=outcome, error=details, traceback=trace, retry_at=retry_at
            ),
            error=error,
        )
        if status is _NOT_RECORDED:
            return
        if status is not None:
            recorded_outcome.set((outcome, status))
        event = "attempt_failed_retrying" if retry_at else "invocation_failed"
        ctx.log.warning(
            event,
            error_type=details["type"],
            outcome=outcome,
            status=status,
            retry_at=retry_at.isoformat() if retry_at else None,
        )

    def _store_write(
        self, ctx: Context, write: Callable[[], T], *, error: BaseException | None = None
    ) -> T | _NotRecorded:
        """`write()`, tried again while the store is unavailable; `_NOT_RECORDED` if it fails.

        An outcome that cannot be written is left to the sweep, which takes the attempt
        back when its lease expires and records it as lost. The attempt's own `error` is
        logged here first, at error level with its traceback, so that it is never lost.
        """
        for delay in (*self.record_backoff_s, None):
            try:
                return write()
            except StoreUnavailable as ex:
                store_error: Exception = ex
                if delay is None:
                    break
                ctx.log.warning("outcome_record_retrying", store_error=str(ex), retry_in_s=delay)
                self.sleep(delay)
            except Exception as ex:
                # Not an outage that passes: another try would fail the same way.
                store_error = ex
                break
        self._log_not_recorded(ctx, store_error, error)
        return _NOT_RECORDED

    @staticmethod
    def _log_not_recorded(
        ctx: Context, store_error: BaseException, error: BaseException | None
    ) -> None:
        ctx.log.error(
            "outcome_not_recorded",
            invocation_id=ctx.invocation_id,
            attempt=ctx.attempt,
            store_error=f"{type(store_error).__name__}: {store_error}",
            error_type=type(error).__name__ if error is not None else None,
            error=str(error) if error is not None else None,
            exc_info=error if error is not None else store_error,
            recovery="the sweep takes the attempt back when its lease expires",
        )
