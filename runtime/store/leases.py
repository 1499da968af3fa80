"""Leases of running attempts: renewed by the worker that runs them, released when it goes.

A claim (`runtime.store.claims`) gives its attempt a short lease; the worker process
renews the leases of all the attempts it runs with one statement every few seconds
(`runtime.recovery.leases.LeaseKeeper`). A lease not renewed in time lapses, and the
sweep (`runtime.store.sweep.Sweep.reclaim_lost`) takes the attempt back.

What keeps one successful execution per invocation:

- only an unexpired lease of the very attempt the worker claimed (same id, attempt number
  and worker, still running) is renewed. An attempt the sweep took back is no longer
  running, or runs again as a later attempt or on another worker, so a late renewal never
  brings it back; neither does it revive a lease that lapsed or was released;
- releasing only makes a lease end now; the sweep then records the attempt as lost like
  any lapsed one, and the success and failure statements still check the claimer
  (`statements.OURS`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from runtime.store import models
from runtime.store.db import Database

_T: sa.Table = models.Invocation.__table__  # type: ignore[assignment]
#: `status = 'running'` with the state in the SQL text, so PostgreSQL can use the partial
#: index of unfinished invocations (see `runtime.store.sweep._status_in`).
_RUNNING = _T.c.status == sa.literal_column(f"'{models.Status.RUNNING.value}'")

#: An attempt: (invocation id, attempt number).
AttemptKey = tuple[str, int]


class Leases:
    """Renew the leases of a worker's attempts, or release them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def renew(
        self, worker_id: str, attempts: Collection[AttemptKey], lease_s: float
    ) -> set[AttemptKey]:
        """Extend these attempts' leases to now + `lease_s`, in one statement; those renewed.

        An attempt missing from the answer is not `worker_id`'s any more, or its lease
        already ended (see the module docstring): it is never renewed again.
        """
        if not attempts:
            return set()
        now = self.db.clock()
        statement = (
            sa.update(_T)
            .where(
                sa.tuple_(_T.c.id, _T.c.attempts).in_(list(attempts)),
                _T.c.worker_id == worker_id,
                _RUNNING,
                _T.c.lease_expires_at > now,
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_s))
            .returning(_T.c.id, _T.c.attempts)
        )
        with self.db.statements() as connection:
            return {(row.id, row.attempts) for row in connection.execute(statement)}

    def release(self, worker_ids: Sequence[str]) -> int:
        """End now the leases of every attempt these workers run; how many."""
        if not worker_ids:
            return 0
        with self.db.statements() as connection:
            return release_held_by(connection, worker_ids, self.db.clock())


def release_held_by(s: Session | Connection, worker_ids: Sequence[str], now: datetime) -> int:
    """End the leases of the attempts `worker_ids` run at `now`, in the caller's transaction.

    The next sweep reclaims them as lost attempts. Leases that already ended stay as they are.
    """
    done: Any = s.execute(
        sa.update(_T)
        .where(_T.c.worker_id.in_(list(worker_ids)), _RUNNING, _T.c.lease_expires_at > now)
        .values(lease_expires_at=now)
    )
    return int(done.rowcount)
