"""The `workers` table: every statement about worker processes (`runtime.recovery.heartbeat` runs them)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from runtime.store.db import Database
from runtime.store.leases import release_held_by
from runtime.store.models import Worker, WorkerState

W = Worker
_ALIVE = (WorkerState.RUNNING, WorkerState.STOPPING)


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
        at the same moment exactly one gets its id back and counts it. In the same
        transaction the leases of the attempts they ran end now, so the next sweep runs
        those invocations again instead of waiting for the leases to lapse.
        """
        with self.db.session() as s:
            moved = s.scalars(
                sa.update(W)
                .where(W.state.in_(_ALIVE), where)
                .values(state=WorkerState.LOST)
                .returning(W.id),
                execution_options={"synchronize_session": False},
            ).all()
            if moved:
                release_held_by(s, moved, self.db.clock())
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
