"""Count attempts, their run time, retries and finished invocations in worker processes.

The outcome of an attempt is recorded in the store by the unit of work
(`runtime.worker.execution`), which returns normally whether the handler succeeded or not; so
this middleware reads the attempt's outcome and the invocation's new status back from
the store after the message was processed. That runs in an "after" hook, where Dramatiq
logs and swallows exceptions: metrics are best effort. A success handed to the store's
batch is counted when its batch is written (a callback on its future, in the committer's
thread). A failure to record is logged
as `metrics_record_failed` (error level) and counted in
`ferry_metrics_record_errors_total`, never lost silently and never failing the attempt.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import structlog

from runtime.context import current_claim, recorded_outcome
from runtime.metrics import Metrics
from runtime.store.claims import Claims

log = structlog.get_logger("ferry.metrics")


@dataclasses.dataclass(frozen=True)
class _Running:
    invocation_id: str
    tenant_id: str
    function: str
    attempt: int
    started: float


_running: contextvars.ContextVar[_Running | None] = contextvars.ContextVar(
    "ferry_metrics_running", default=None
)


class MetricsMiddleware(dramatiq.Middleware):
    """Install after the claim middleware: it measures the attempts the claim won."""

    def __init__(
        self,
        metrics: Metrics,
        claims: Claims,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(metrics, Metrics):
            raise TypeError("MetricsMiddleware needs a runtime.metrics.Metrics")
        self.metrics = metrics
        self.claims = claims
        self.monotonic = monotonic

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        recorded_outcome.set(None)
        claimed = current_claim.get()
        if claimed is None:
            return
        inv = claimed.invocation
        _running.set(
            _Running(inv.id, inv.tenant_id, inv.function, claimed.attempt, self.monotonic())
        )
        self.metrics.in_progress.labels(function=inv.function).inc()

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        running = _running.get()
        if running is None:
            return
        _running.set(None)
        # Left for the claim middleware, whose "after" hook runs next and clears it.
        recorded = recorded_outcome.get()
        try:
            self.metrics.in_progress.labels(function=running.function).dec()
            self.metrics.observe_run(
                function=running.function,
                tenant_id=running.tenant_id,
                duration_s=self.monotonic() - running.started,
            )
        except Exception as ex:
            self._failed(running, ex)
            return
        if isinstance(recorded, concurrent.futures.Future):
            recorded.add_done_callback(functools.partial(self._count_written, running))
        else:
            self._count(running, recorded)

    def _count_written(self, running: _Running, later: concurrent.futures.Future[bool]) -> None:
        if later.exception() is not None:
            # Not recorded: the sweep takes the attempt back, and counts it then.
            return
        self._count(running, ("succeeded", "succeeded") if later.result() else None)

    def _count(self, running: _Running, recorded: tuple[str | None, str | None] | None) -> None:
        try:
            # The unit of work says what it recorded; only when it recorded nothing (its
            # lease was lost) is the store asked what the attempt came to.
            if recorded is None:
                recorded = self.claims.attempt_outcome(running.invocation_id, running.attempt)
            outcome, status = recorded
            self.metrics.count_outcome(
                function=running.function,
                tenant_id=running.tenant_id,
                outcome=outcome,
                status=status,
            )
        except Exception as ex:
            self._failed(running, ex)

    def _failed(self, running: _Running, ex: Exception) -> None:
        self.metrics.record_errors.labels(where="worker").inc()
        log.error(
            "metrics_record_failed",
            invocation_id=running.invocation_id,
            function=running.function,
            attempt=running.attempt,
            error_type=type(ex).__name__,
            error=str(ex),
        )

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _running.set(None)
