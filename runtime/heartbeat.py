"""Worker heartbeats: every worker process says it is alive, in the store, every few seconds.

A `Heartbeat` thread runs in each worker process. It registers the process in the
`workers` table when it starts, updates `last_seen_at` every `interval_s`, says
`stopping` when the process drains and `stopped` when it exits cleanly. A worker not
seen for `stale_after_s` is stale; the next heartbeat of any other worker marks it
`lost` with one conditional UPDATE, so each loss is counted once
(`ferry_workers_lost_total`) however many workers notice it. A restarted worker also
marks its dead predecessors on the same host at once (their pid is gone), so a crash
loop shows even when no worker lives long enough to see another go stale.

Rows of ended workers are kept for `retention_s` (the dashboard's recent history), then
pruned. The SQL store is shared by every process, so the dashboard and the gateway's
`/metrics` see all workers, whichever host they run on.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog

from runtime.store.db import Database
from runtime.store.models import Worker, WorkerState

if TYPE_CHECKING:
    from runtime.metrics import Metrics
    from runtime.settings import Settings

log = structlog.get_logger("ferry.heartbeat")

W = Worker
_ALIVE = (WorkerState.RUNNING, WorkerState.STOPPING)
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


#: What the dashboard and `ferry_workers{state}` call a worker, from its row and the time.
DISPLAY_STATES = ("live", "stopping", "stale", "lost", "stopped")


@dataclasses.dataclass(frozen=True)
class WorkerView:
    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    threads: int
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    #: The stored state (`WorkerState`).
    state: str

    @classmethod
    def from_row(cls, row: Worker) -> WorkerView:
        return cls(
            id=row.id,
            hostname=row.hostname,
            pid=row.pid,
            queues=tuple(q for q in row.queues.split(",") if q),
            threads=row.threads,
            started_at=row.started_at,
            last_seen_at=row.last_seen_at,
            stopped_at=row.stopped_at,
            state=row.state,
        )

    def display_state(self, now: datetime, stale_after_s: float) -> str:
        """`live`, `stopping`, `stale` (not seen lately, not yet marked), `lost` or `stopped`."""
        if self.state in (WorkerState.STOPPED, WorkerState.LOST):
            return str(self.state)
        if now - self.last_seen_at > timedelta(seconds=stale_after_s):
            return "stale"
        return "stopping" if self.state == WorkerState.STOPPING else "live"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else
    return True


class Workers:
    """The `workers` table: every statement about worker processes is here."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register(
        self, worker_id: str, *, hostname: str, pid: int, queues: Sequence[str], threads: int
    ) -> None:
        """Record a starting worker (again, if its row was pruned while it was cut off)."""
        now = self.db.clock()
        with self.db.session() as s:
            row = s.get(W, worker_id)
            if row is None:
                row = W(id=worker_id, started_at=now)
                s.add(row)
            row.hostname = hostname
            row.pid = pid
            row.queues = ",".join(queues)
            row.threads = threads
            row.last_seen_at = now
            row.stopped_at = None
            row.state = WorkerState.RUNNING

    def beat(self, worker_id: str) -> str | None:
        """Record that the worker is alive; its state before the beat, None if it has no row.

        A worker marked lost (it could not beat for a while) becomes running again.
        """
        now = self.db.clock()
        with self.db.session() as s:
            before = s.scalar(sa.select(W.state).where(W.id == worker_id))
            if before is None:
                return None
            values: dict[str, Any] = {"last_seen_at": now}
            if before == WorkerState.LOST:
                values["state"] = WorkerState.RUNNING
            s.execute(sa.update(W).where(W.id == worker_id).values(**values))
            return str(before)

    def set_state(self, worker_id: str, state: WorkerState) -> None:
        now = self.db.clock()
        values: dict[str, Any] = {"state": state, "last_seen_at": now}
        if state == WorkerState.STOPPED:
            values["stopped_at"] = now
        with self.db.session() as s:
            s.execute(sa.update(W).where(W.id == worker_id).values(**values))

    def mark_lost(self, *, stale_after_s: float) -> list[str]:
        """Mark workers not seen for `stale_after_s` as lost; the ids this call marked."""
        cutoff = self.db.clock() - timedelta(seconds=stale_after_s)
        return self._mark(W.last_seen_at < cutoff)

    def mark_dead_on_host(
        self, *, hostname: str, own_pid: int, quiet_for_s: float, local_ids: set[str]
    ) -> list[str]:
        """Mark workers of this host whose process is gone as lost; the ids marked.

        Only rows quiet for `quiet_for_s` count: a live worker that beats (in another
        pid namespace with the same hostname, say) is never taken for a dead one.
        """
        cutoff = self.db.clock() - timedelta(seconds=quiet_for_s)
        quiet = sa.and_(W.hostname == hostname, W.last_seen_at < cutoff)
        with self.db.session() as s:
            candidates = s.scalars(sa.select(W).where(W.state.in_(_ALIVE), quiet)).all()
            dead = [
                row.id
                for row in candidates
                if row.id not in local_ids and (row.pid == own_pid or not _pid_alive(row.pid))
            ]
        return self._mark(sa.and_(quiet, W.id.in_(dead))) if dead else []

    def _mark(self, where: Any) -> list[str]:
        """Move matching live rows to lost in one conditional UPDATE; the ids it moved.

        A row leaves the live states once, so of several workers noticing the same loss
        at the same moment exactly one gets its id back and counts it.
        """
        with self.db.session() as s:
            moved = s.scalars(
                sa.update(W)
                .where(W.state.in_(_ALIVE), where)
                .values(state=WorkerState.LOST)
                .returning(W.id),
                execution_options={"synchronize_session": False},
            ).all()
        return sorted(moved)

    def prune(self, *, retention_s: float) -> int:
        """Delete ended workers last seen more than `retention_s` ago; how many."""
        cutoff = self.db.clock() - timedelta(seconds=retention_s)
        with self.db.session() as s:
            done = s.execute(
                sa.delete(W).where(
                    W.state.in_((WorkerState.STOPPED, WorkerState.LOST)), W.last_seen_at < cutoff
                )
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    def list(self) -> list[WorkerView]:
        """Every known worker, live ones first, then by latest heartbeat."""
        order = sa.case(
            (W.state == WorkerState.RUNNING, 0), (W.state == WorkerState.STOPPING, 1), else_=2
        )
        with self.db.session() as s:
            rows = s.scalars(sa.select(W).order_by(order, W.last_seen_at.desc(), W.id))
            return [WorkerView.from_row(r) for r in rows]

    def counts(self, *, stale_after_s: float) -> dict[str, int]:
        """How many workers are in each display state (every state present, maybe 0)."""
        now = self.db.clock()
        counts = dict.fromkeys(DISPLAY_STATES, 0)
        for worker in self.list():
            counts[worker.display_state(now, stale_after_s)] += 1
        return counts


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
            log.warning(
                "heartbeat_failed", step="register", error_type=type(ex).__name__, error=str(ex)
            )
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
            log.warning(
                "heartbeat_failed", step="host_sweep", error_type=type(ex).__name__, error=str(ex)
            )
            return
        self._count_lost(lost, reason="process_gone")

    def _count_lost(self, lost: list[str], *, reason: str) -> None:
        for worker_id in lost:
            log.warning("worker_lost", lost_worker_id=worker_id, reason=reason)
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
            log.warning(
                "heartbeat_failed", step="beat", error_type=type(ex).__name__, error=str(ex)
            )

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
            log.warning(
                "heartbeat_failed", step=str(state), error_type=type(ex).__name__, error=str(ex)
            )
