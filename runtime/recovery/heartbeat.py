"""Worker heartbeats: every worker process says it is alive, in the store, every few seconds.

A `Heartbeat` thread runs in each worker process. It registers the process in the
`workers` table when it starts, updates `last_seen_at` every `interval_s`, says
`stopping` when the process drains and `stopped` when it exits cleanly. A worker not
seen for `stale_after_s` is stale; the next heartbeat of any other worker marks it
`lost` with one conditional UPDATE, so each loss is counted once
(`ferry_workers_lost_total`) however many workers notice it. A restarted worker also
marks its dead predecessors on the same host at once (their pid is gone), so a crash
loop shows even when no worker lives long enough to see another go stale. Marking a
worker lost also ends the leases of the attempts it ran, so the next sweep runs them
again (`runtime.store.workers`).

Rows of ended workers are kept for `retention_s` (the dashboard's recent history), then
pruned. The SQL store is shared by every process, so the dashboard and the gateway's
`/metrics` see all workers, whichever host they run on. The statements are in
`runtime.store.workers`; this module is the thread that runs them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from runtime.store.models import WorkerState

if TYPE_CHECKING:
    from runtime.metrics import Metrics
    from runtime.settings import Settings
    from runtime.store.workers import Workers

log = structlog.get_logger("ferry.heartbeat")

#: Workers of this process: a same-host row with our pid is a predecessor only if not one of these.
_LOCAL_WORKERS: set[str] = set()
_local_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class HeartbeatOptions:
    """How often workers beat, when one counts as gone, and how long ended ones are kept."""

    interval_s: float = 5.0
    stale_after_s: float = 30.0
    retention_s: float = 86_400.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.retention_s <= 0:
            raise ValueError("heartbeat interval and retention must be positive")
        if self.stale_after_s < 2 * self.interval_s:
            # One late beat (a slow database, a GC pause) must not make a worker lost.
            raise ValueError("stale_after_s must be at least twice interval_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> HeartbeatOptions:
        """Read `FERRY_WORKER_HEARTBEAT_S`, `_STALE_AFTER_S` and `_RETENTION_S`."""
        return cls(
            interval_s=settings.worker_heartbeat_s,
            stale_after_s=settings.worker_stale_after_s,
            retention_s=settings.worker_retention_s,
        )


def _warn_failed(step: str, ex: Exception) -> None:
    log.warning("heartbeat_failed", step=step, error_type=type(ex).__name__, error=str(ex))


class Heartbeat:
    """The heartbeat thread of one worker process."""

    def __init__(
        self,
        workers: Workers,
        worker_id: str,
        *,
        queues: Sequence[str],
        threads: int,
        options: HeartbeatOptions,
        metrics: Metrics | None = None,
        hostname: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.workers = workers
        self.worker_id = worker_id
        self.queues = list(queues)
        self.threads = threads
        self.options = options
        self.metrics = metrics
        self.hostname = hostname or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-heartbeat", daemon=True)
        self._beats = 0

    def start(self) -> None:
        """Register the worker now (so it is listed at once), then beat in a thread."""
        self.register()
        self._thread.start()

    def register(self) -> None:
        """Record the start, and mark dead predecessors on this host as lost."""
        with _local_lock:
            _LOCAL_WORKERS.add(self.worker_id)
        self._register()
        if self.metrics is not None:
            self.metrics.worker_starts.inc()
        self._sweep_host()

    def _register(self) -> bool:
        try:
            self.workers.register(
                self.worker_id,
                hostname=self.hostname,
                pid=self.pid,
                queues=self.queues,
                threads=self.threads,
            )
        except Exception as ex:  # the next beat registers it; a worker must not die of this
            _warn_failed("register", ex)
            return False
        log.info("worker_registered", worker_id=self.worker_id, queues=self.queues)
        return True

    def _sweep_host(self) -> None:
        try:
            with _local_lock:
                local = set(_LOCAL_WORKERS)
            lost = self.workers.mark_dead_on_host(
                hostname=self.hostname,
                own_pid=self.pid,
                quiet_for_s=2 * self.options.interval_s,
                local_ids=local,
            )
        except Exception as ex:
            _warn_failed("host_sweep", ex)
            return
        self._count_lost(lost, reason="process_gone")

    def _count_lost(self, lost: list[str], *, reason: str) -> None:
        for worker_id in lost:
            log.warning("worker_lost", lost_worker_id=worker_id, reason=reason, attempts="released")
        if lost and self.metrics is not None:
            self.metrics.workers_lost.inc(len(lost))

    def beat_once(self) -> None:
        """One heartbeat: say we live, mark workers gone silent, prune old rows."""
        try:
            before = self.workers.beat(self.worker_id)
            if before is None:
                self._register()
            elif before == WorkerState.LOST:
                log.warning("worker_heartbeat_resumed", worker_id=self.worker_id)
            lost = self.workers.mark_lost(stale_after_s=self.options.stale_after_s)
            self._count_lost(lost, reason="stale")
            self._beats += 1
            # Pruning is housekeeping: about once a minute is plenty.
            if self._beats % max(1, int(60 / self.options.interval_s)) == 1:
                self.workers.prune(retention_s=self.options.retention_s)
        except Exception as ex:  # keep beating; the next one may reach the store
            _warn_failed("beat", ex)

    def _loop(self) -> None:
        while not self._stop.wait(self.options.interval_s):
            self.beat_once()

    def stopping(self) -> None:
        """Say the worker drains: it takes no new work (best effort)."""
        self._set_state(WorkerState.STOPPING)

    def stop(self) -> None:
        """Stop beating and record a clean exit."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._set_state(WorkerState.STOPPED)
        with _local_lock:
            _LOCAL_WORKERS.discard(self.worker_id)

    def _set_state(self, state: WorkerState) -> None:
        try:
            self.workers.set_state(self.worker_id, state)
        except Exception as ex:
            _warn_failed(str(state), ex)
