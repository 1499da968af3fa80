"""The sweep: take back lost attempts, send what is due or what the broker lost, expire.

Every worker process (and `ferry dev`) runs it every `FERRY_SWEEP_INTERVAL_S`; on
PostgreSQL the rows are picked with `FOR UPDATE SKIP LOCKED`, so sweepers never contend.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dramatiq
import redis
import structlog

from runtime.dispatch import Dispatcher
from runtime.errors import BrokerUnavailable
from runtime.metrics import Metrics
from runtime.store import Store
from runtime.worker.queues import queue_depths

log = structlog.get_logger("ferry.recovery")

#: An invocation's `dispatched_at` is stamped just before its message is built, so the
#: message at a queue's head was sent a little after its own `dispatched_at`. Only what
#: was dispatched this long before the head counts as ahead of it (lost); a lost message
#: nearer the head waits until the head moves on.
ENQUEUE_SLACK = timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """What one sweep did: attempts taken back, invocations sent, sends that failed."""

    lost: int
    sent: int
    failed_sends: int
    #: Expired finished invocations removed (`runtime.recovery.retention`).
    removed: int = 0


class Sweep:
    """One round of recovery over the store and the broker."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        broker: dramatiq.Broker,
        *,
        redispatch_after_s: float,
        retention: Callable[[], int] | None = None,
        callbacks: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.broker = broker
        self.redispatch_after_s = redispatch_after_s
        #: Removes expired finished invocations when due (a `RetentionSweep`); None: never.
        self.retention = retention
        #: Starts delivering due completion callbacks in the background
        #: (`CallbackDelivery.start_round`); None: they are not delivered here.
        self.callbacks = callbacks

    def __call__(self) -> SweepReport:
        """Recover lost attempts, send everything due or stale, then remove what expired."""
        lost = self.store.sweep.reclaim_lost()
        for invocation_id in lost:
            log.warning("attempt_lost", invocation_id=invocation_id)
        sent = failed = 0
        batch = self.store.sweep.take_dispatchable(
            redispatch_after_s=self.redispatch_after_s,
            waiting_since=self._waiting_since(),
            fair=self.dispatcher.fair_windows,
        )
        for item in batch:
            if item.function not in self.dispatcher.actors:
                log.error(
                    "dispatch_unknown_function", invocation_id=item.id, function=item.function
                )
                failed += 1
                continue
            try:
                self.dispatcher.send(item)
                sent += 1
            except BrokerUnavailable:
                # Marked as sent; it is sent again once `redispatch_after_s` passes.
                failed += 1
        if failed:
            log.warning("dispatch_failed", count=failed)
        if self.callbacks is not None:
            self.callbacks()
        # Last, so that a failure here delays no send and no recovery.
        removed = self.retention() if self.retention is not None else 0
        return SweepReport(lost=len(lost), sent=sent, failed_sends=failed, removed=removed)

    def _waiting_since(self) -> dict[str, datetime | None]:
        """When each queue's oldest waiting message was enqueued (None: queue empty).

        A backlog older than `redispatch_after_s` is not lost work; without this the sweep
        would send all of it again. If the broker cannot say, every queue falls back to
        `redispatch_after_s` alone.
        """
        try:
            depths = queue_depths(self.broker)
        except (redis.RedisError, OSError) as ex:
            log.warning("queue_depths_unavailable", error_type=type(ex).__name__)
            return {}
        return {
            d.queue: None
            if d.oldest_enqueued_at is None
            else datetime.fromtimestamp(d.oldest_enqueued_at, UTC) - ENQUEUE_SLACK
            for d in depths
        }


class SweepThread:
    """Runs a `Sweep` every `interval_s` in a thread until stopped.

    Every retry, delayed run and lost attempt waits for the sweep, so a failed one is
    logged at error level with its traceback (`sweep_failed`) and counted
    (`ferry_sweep_failures_total`); `ferry_sweep_last_success_timestamp_seconds` is what
    the `FerrySweepStalled` alert watches.
    """

    def __init__(
        self,
        sweep: Callable[[], object],
        interval_s: float,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sweep = sweep
        self.interval_s = interval_s
        self.figures = metrics.sweep() if metrics is not None else None
        self.clock = clock
        self.consecutive_failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sweep_once()
            self._stop.wait(self.interval_s)

    def sweep_once(self) -> bool:
        """Sweep once and count it; a failure is logged, and the next round tries again."""
        try:
            report = self.sweep()
        except Exception as ex:
            self.consecutive_failures += 1
            if self.figures is not None:
                self.figures.failures.inc()
            log.error(
                "sweep_failed",
                error_type=type(ex).__name__,
                error=str(ex),
                consecutive_failures=self.consecutive_failures,
                exc_info=ex,
            )
            return False
        if self.figures is not None:
            self.figures.last_success.set(self.clock())
            if isinstance(report, SweepReport):
                self.figures.reclaimed.inc(report.lost)
                self.figures.removed.inc(report.removed)
        if self.consecutive_failures:
            log.info("sweep_recovered", failed_sweeps=self.consecutive_failures)
            self.consecutive_failures = 0
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
