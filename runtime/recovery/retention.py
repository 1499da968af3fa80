"""Retention in the sweep: remove expired finished invocations in small batches.

The sweep calls a `RetentionSweep` every round; it runs at most every
`FERRY_RETENTION_INTERVAL_S` (by the store's clock) and then removes batches of
`FERRY_RETENTION_BATCH_SIZE` until nothing expired is left or `budget_s` has passed, so
the sweep's other work (due retries, lost messages) waits at most that long. A run cut
short by its budget leaves the next sweep to carry on at once, from the expiry it
stopped at, so one busy tenant or status cannot starve the others.

After the invocations, it removes audit records older than `FERRY_RETENTION_AUDIT_S`
(0: never), oldest first, in the same batches and within the same budget.

Each batch is its own short transaction (`runtime.store.retention`): the accept path
never waits for it, and any number of processes may run it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from runtime.settings import Settings
from runtime.store import Store
from runtime.store.retention import RetentionPolicy, expiries

log = structlog.get_logger("ferry.recovery")

#: Seconds one run may spend removing before it yields to the rest of the sweep.
RUN_BUDGET_S = 0.5
#: While it is behind, it logs what it removed at most this often (seconds).
LOG_EVERY_S = 60.0


class RetentionSweep:
    """One retention run when due: removes expired invocations; returns how many."""

    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        *,
        interval_s: float,
        batch_size: int,
        budget_s: float = RUN_BUDGET_S,
        monotonic: Callable[[], float] = time.monotonic,
        audit_s: int = 0,
    ) -> None:
        self.store = store
        self.policy = policy
        #: Seconds an audit record is kept; 0: forever.
        self.audit_s = audit_s
        #: A run cut short while removing audit records: the next one carries on at once.
        self._audit_behind = False
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.budget_s = budget_s
        self.monotonic = monotonic
        self._last_run: datetime | None = None
        #: Where a run cut short stopped (an index into that run's expiries); None: done.
        self._resume_at: int | None = None
        #: Removed but not logged yet, and when it last logged.
        self._unlogged = 0
        self._logged_at = monotonic()

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> RetentionSweep:
        return cls(
            store,
            RetentionPolicy.from_settings(settings),
            interval_s=settings.retention_interval_s,
            batch_size=settings.retention_batch_size,
            audit_s=settings.retention_audit_s,
        )

    def due(self, now: datetime) -> bool:
        """Whether a run is due: behind, never run, or `interval_s` since the last."""
        if self._resume_at is not None or self._audit_behind or self._last_run is None:
            return True
        return (now - self._last_run).total_seconds() >= self.interval_s

    def __call__(self) -> int:
        now = self.store.db.clock()
        if not self.due(now):
            return 0
        self._last_run = now
        expired = expiries(self.policy, self.store.retention.tenants(), now)
        start = (self._resume_at or 0) % max(1, len(expired))
        self._resume_at = None
        deadline = self.monotonic() + self.budget_s
        removed = 0
        for step in range(len(expired)):
            index = (start + step) % len(expired)
            while True:
                count = self.store.retention.remove(expired[index], limit=self.batch_size)
                removed += count
                if count < self.batch_size:
                    break  # this expiry is done
                if self.monotonic() >= deadline:
                    self._resume_at = index
                    self._log(removed, behind=True)
                    return removed
        self._audit_behind = not self._remove_audit(now, deadline)
        if self._audit_behind:
            return removed
        self._log(removed, behind=False)
        return removed

    def _remove_audit(self, now: datetime, deadline: float) -> bool:
        """Remove expired audit records until none is left (True) or the budget ends."""
        if self.audit_s <= 0:
            return True
        before = now - timedelta(seconds=self.audit_s)
        removed = 0
        try:
            while True:
                count = self.store.retention.remove_audit(before, limit=self.batch_size)
                removed += count
                if count < self.batch_size:
                    return True
                if self.monotonic() >= deadline:
                    return False
        finally:
            if removed:
                log.info("audit_records_removed", count=removed)

    def _log(self, removed: int, *, behind: bool) -> None:
        """One line when it catches up, and at most every `LOG_EVERY_S` while behind."""
        self._unlogged += removed
        if not self._unlogged or (behind and self.monotonic() - self._logged_at < LOG_EVERY_S):
            return
        log.info("invocations_removed", count=self._unlogged, behind=behind)
        self._unlogged = 0
        self._logged_at = self.monotonic()
