"""The unit of work of one attempt: run the handler, then record the outcome.

This runs as the Dramatiq actor's body, after the claim middleware won the invocation.
Recording happens here, not in an `after_process_message` hook, because Dramatiq only
logs exceptions raised in "after" hooks: an outcome that must be written cannot live
there. Retries are Ferry's too, not Dramatiq's `Retries` middleware: the next attempt
is a row in the store (`retrying`, `scheduled_for`) that the sweep sends when due,
so a Redis restart or a killed worker cannot lose it.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pydantic
import structlog
from dramatiq.middleware.time_limit import TimeLimitExceeded

from runtime.context import Context, current_claim, current_context, recorded_outcome
from runtime.errors import Permanent, Retryable
from runtime.outbound import OutboundPolicy
from runtime.registry import Function
from runtime.store.db import translate_errors

if TYPE_CHECKING:
    from runtime.services.invocations import InvocationService
    from runtime.store import Store
    from runtime.store.claims import Claimed

log = structlog.get_logger("ferry.execution")


def backoff_s(function: Function, retry_number: int, rand: Callable[[], float]) -> float:
    """Exponential backoff with jitter: between half and all of min * 2^(n-1), capped."""
    ceiling = min(function.max_backoff, function.min_backoff * 2.0 ** (retry_number - 1))
    return float(ceiling) * (0.5 + rand() / 2)


def classify(function: Function, error: BaseException) -> str:
    """`timed_out`, `retry` or `permanent` for an exception an attempt ended with."""
    if isinstance(error, TimeLimitExceeded):
        return "timed_out"
    spec = function.spec
    if isinstance(error, Permanent | pydantic.ValidationError) or isinstance(
        error, spec.permanent_on
    ):
        return "permanent"
    if isinstance(error, Retryable):
        return "retry"
    if spec.retry_on and not isinstance(error, spec.retry_on):
        return "permanent"
    return "retry"


class Executor:
    def __init__(
        self,
        store: Store,
        invocations: InvocationService,
        *,
        secret_key: str,
        outbound: OutboundPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.invocations = invocations
        self.secret_key = secret_key
        self.outbound = outbound
        self.rand = rand

    def actor_body(self, function: Function) -> Callable[[str], None]:
        def run(invocation_id: str) -> None:
            self.run(function, invocation_id)

        run.__name__ = function.name
        run.__qualname__ = function.name
        run.__module__ = function.spec.module
        return run

    def run(self, function: Function, invocation_id: str) -> None:
        claimed = current_claim.get()
        if claimed is None or claimed.invocation.id != invocation_id:
            raise RuntimeError("an attempt ran without its claim; is the claim middleware missing?")
        ctx = Context.for_claim(
            claimed,
            store=self.store,
            invocations=self.invocations,
            secret_key=self.secret_key,
            outbound=self.outbound,
        )
        token = current_context.set(ctx)
        try:
            ctx.log.info("attempt_started")
            try:
                payload = function.validate_input(claimed.invocation.payload)
                output = function.spec.handler(ctx, payload)
                result = function.dump_output(output)
            except (Exception, TimeLimitExceeded) as ex:
                session = ctx.close_session()
                if session is not None:
                    session.close()
                self._record_failure(function, claimed, ctx, ex)
                return
            self._record_success(claimed, ctx, result)
        finally:
            current_context.reset(token)

    def _record_success(
        self, claimed: Claimed, ctx: Context, result: dict[str, Any] | None
    ) -> None:
        session = ctx.close_session()
        if session is None:
            # The function wrote nothing through ctx.session: record on a plain connection,
            # without an ORM unit of work. A lost lease updates nothing, so commit is safe.
            recorded = self.store.claims.succeed_alone(claimed, result)
        else:
            with translate_errors(), session:
                recorded = self.store.claims.succeed(session, claimed, result)
                if recorded:
                    session.commit()
                else:
                    session.rollback()
        if recorded:
            recorded_outcome.set(("succeeded", "succeeded"))
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
        details = {"type": type(error).__name__, "message": str(error) or type(error).__name__}
        status = self.store.claims.fail(
            claimed,
            outcome=outcome,
            error=details,
            traceback="".join(traceback.format_exception(error)),
            retry_at=retry_at,
        )
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
