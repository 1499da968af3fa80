"""Claims and leases: a worker takes an invocation for one attempt and records its outcome.

State changes are atomic conditional updates (`UPDATE ... WHERE id = :id AND status IN
(...)`), not read-then-write. On PostgreSQL the UPDATE takes the row lock; a second
worker claiming the same row waits for the first to commit, re-checks the WHERE clause
against the committed row (READ COMMITTED) and updates nothing. So exactly one claimer
wins without SELECT ... FOR UPDATE round trips, and the same statement is correct on
SQLite, where writers are serialised anyway. An outcome is recorded only while the lease
is still the claimer's (`statements.OURS`).

With group commit (`group_commit_ms` > 0, `runtime.store.group_commit`) a claim without
concurrency limits and a success outside a unit of work (`succeed_alone`) are written
with those of the process's other threads, one commit per batch, each row checked as here.

With `success_batch_ms` > 0 (PostgreSQL only), `succeed_later` hands a success outside a
unit of work to a committer that writes the successes of the process's threads in
batches without making any of them wait: each gets a future of whether it was recorded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from runtime.store import models, statements
from runtime.store.claim_batches import (
    ClaimRequest,
    SuccessRequest,
    add_attempt,
    claim_one,
    claim_params,
    close_attempt,
    succeed_one,
    write_batch,
    write_riding_outages,
)
from runtime.store.db import Database, translate_errors
from runtime.store.driver import DriverStatement, prepared
from runtime.store.fairness import WaitReason
from runtime.store.group_commit import CommitterClosed, GroupCommitter
from runtime.store.models import Status
from runtime.store.views import InvocationView

I = models.Invocation  # noqa: E741 - the table every statement here is about


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A worker won the invocation: run attempt `attempt` under the lease."""

    invocation: InvocationView
    attempt: int


@dataclasses.dataclass(frozen=True)
class NotClaimed:
    """Why a delivery did not become an attempt."""

    #: `missing`, `finished`, `running`, `not_due`, `tenant_suspended`, or a
    #: `runtime.store.fairness.WaitReason` of a concurrency limit (the invocation is held again).
    reason: str
    due_at: datetime | None = None


@dataclasses.dataclass(frozen=True)
class Limits:
    """Running invocations allowed at once: the tenant's, the function's, per key; None: no limit."""

    tenant: int | None = None
    function: int | None = None
    key: int | None = None

    @property
    def any(self) -> bool:
        return self.tenant is not None or self.function is not None or self.key is not None


def claim_statement(db: Database, *, synchronous_commit: bool = False) -> DriverStatement:
    """A claim with its attempt row, as psycopg runs it (PostgreSQL).

    Unless `synchronous_commit`, its commit does not wait for the disk: a claim lost to a
    database crash leaves the invocation claimable, which the sweep sends again, and the
    attempt that ran under it can record no outcome (docs/architecture.md, "A claim's
    commit").
    """
    if synchronous_commit:
        return prepared(statements.CLAIM_WITH_ATTEMPT, db.engine)
    return prepared(statements.CLAIM_WITH_ATTEMPT_NOT_WAITING, db.engine)


def success_statement(db: Database) -> DriverStatement:
    """A success that closes its attempt, as psycopg runs it (PostgreSQL)."""
    return prepared(statements.SUCCEED_AND_CLOSE, db.engine, json=("_result",))


class Claims:
    """The worker's side of an invocation: claim it, then record success or failure."""

    def __init__(
        self,
        db: Database,
        *,
        group_commit_ms: float = 0.0,
        success_batch_ms: float = 0.0,
        claim_synchronous_commit: bool = False,
    ) -> None:
        self.db = db
        # The claim and the success alone run once per invocation: psycopg runs them.
        self._claim_statement: DriverStatement | None = None
        self._success_statement: DriverStatement | None = None
        if db.dialect == "postgresql":
            self._claim_statement = claim_statement(db, synchronous_commit=claim_synchronous_commit)
            self._success_statement = success_statement(db)
        self._group: GroupCommitter | None = None
        if group_commit_ms > 0:
            self._group = GroupCommitter(
                functools.partial(write_batch, db), window_s=group_commit_ms / 1000
            )
        self._later: GroupCommitter | None = None
        if success_batch_ms > 0 and db.dialect == "postgresql":
            # SQLite writes one transaction at a time whatever the batch: nothing to share.
            self._later = GroupCommitter(
                functools.partial(write_riding_outages, db),
                window_s=success_batch_ms / 1000,
                sleep_through_window=True,
            )

    def close(self) -> None:
        """Stop the committers, if any, after the requests they hold are written.

        A worker closes them before it releases its leases, so that the successes still
        waiting for their batch are recorded first; from then on successes go one by one.
        """
        for committer in (self._later, self._group):
            if committer is not None:
                committer.close()

    def claim(
        self,
        invocation_id: str,
        worker_id: str,
        lease_s: float,
        *,
        tenant_id: str | None = None,
        limits: Limits | None = None,
    ) -> Claimed | NotClaimed:
        """Take the invocation for one attempt, or say why not (see the module docstring).

        With `limits` (and the invocation's `tenant_id`), only while fewer than each limit
        run; an invocation a limit refuses is held again, with the limit as its reason.
        """
        if limits is not None and limits.any and tenant_id is not None:
            return self._claim_limited(invocation_id, worker_id, lease_s, tenant_id, limits)
        request = ClaimRequest(invocation_id, worker_id, lease_s)
        if self._group is not None:
            try:
                won = self._group.submit(request)
            except CommitterClosed:
                pass  # the single statement below
            else:
                if won is not None:
                    return Claimed(InvocationView.from_row(won), won.attempts)
                return self._why_not_claimed(invocation_id, self.db.clock())
        now = self.db.clock()
        if self._claim_statement is not None:
            with self.db.driver_connection() as driver:
                won = self._claim_statement.first(driver, claim_params(request, now))
            if won is not None:
                return Claimed(InvocationView.from_mapping(won), won["attempts"])
            return self._why_not_claimed(invocation_id, now)
        with translate_errors(), self.db.engine.begin() as connection:
            row = claim_one(connection, request, now)
        if row is not None:
            # A Core row has the attributes `from_row` reads.
            return Claimed(InvocationView.from_row(row), row.attempts)
        return self._why_not_claimed(invocation_id, now)

    def _claim_limited(
        self, invocation_id: str, worker_id: str, lease_s: float, tenant_id: str, limits: Limits
    ) -> Claimed | NotClaimed:
        """The claim under concurrency limits: count, then claim, as one serialised step.

        On PostgreSQL a transaction-scoped advisory lock on the tenant serialises its limited
        claims; it is taken by its own statement, so that the counting statement's snapshot
        (READ COMMITTED) already sees the previous claimer's commit. SQLite has one writer
        at a time, and the counts are subqueries of the claim's UPDATE.
        """
        now = self.db.clock()
        params = {
            "_id": invocation_id,
            "_now": now,
            "_lease": now + timedelta(seconds=lease_s),
            "_worker": worker_id,
            "_tenant": tenant_id,
            "_tenant_limit": limits.tenant,
            "_function_limit": limits.function,
            "_key_limit": limits.key,
        }
        with translate_errors(), self.db.engine.begin() as connection:
            if self.db.dialect == "postgresql":
                connection.execute(statements.LOCK_TENANT_CLAIMS, {"_key": f"claims:{tenant_id}"})
            claim = statements.limited_claim(
                limits.tenant is not None, limits.function is not None, limits.key is not None
            )
            row = connection.execute(claim, params).first()
            if row is not None:
                add_attempt(connection, row, worker_id, now)
                return Claimed(InvocationView.from_row(row), row.attempts)  # type: ignore[arg-type]
            reason = self._limit_reached(connection, invocation_id, tenant_id, limits)
            if reason is not None:
                connection.execute(
                    sa.update(I)
                    .where(I.id == invocation_id, I.status.in_(models.CLAIMABLE))
                    .values(dispatched_at=None, waiting_reason=reason)
                )
                return NotClaimed(reason)
        return self._why_not_claimed(invocation_id, now)

    @staticmethod
    def _limit_reached(
        connection: Connection, invocation_id: str, tenant_id: str, limits: Limits
    ) -> WaitReason | None:
        """The limit that keeps a claimable, due invocation from running now, if any."""
        row = connection.execute(
            sa.select(I.function, I.concurrency_key).where(
                I.id == invocation_id, I.status.in_(models.CLAIMABLE)
            )
        ).first()
        if row is None:
            return None
        running = sa.select(sa.func.count()).where(
            I.tenant_id == tenant_id, I.status == Status.RUNNING
        )
        checks = [
            (limits.tenant, running, WaitReason.TENANT_CONCURRENCY),
            (
                limits.function,
                running.where(I.function == row.function),
                WaitReason.FUNCTION_CONCURRENCY,
            ),
        ]
        if row.concurrency_key is not None:
            keyed = running.where(
                I.function == row.function, I.concurrency_key == row.concurrency_key
            )
            checks.append((limits.key, keyed, WaitReason.KEY_CONCURRENCY))
        for limit, count, reason in checks:
            if limit is not None and (connection.scalar(count) or 0) >= limit:
                return reason
        return None

    def _why_not_claimed(self, invocation_id: str, now: datetime) -> NotClaimed:
        with self.db.autocommit() as s:
            row = s.get(I, invocation_id)
        if row is None:
            return NotClaimed("missing")
        if row.status in models.FINISHED:
            return NotClaimed("finished")
        if row.status == Status.RUNNING:
            return NotClaimed("running")
        if row.scheduled_for is not None and row.scheduled_for > now:
            return NotClaimed("not_due", due_at=row.scheduled_for)
        return NotClaimed("tenant_suspended")

    @staticmethod
    def _success(claimed: Claimed, result: dict[str, Any] | None) -> SuccessRequest:
        inv = claimed.invocation
        return SuccessRequest(inv.id, claimed.attempt, inv.worker_id or "", result)

    @staticmethod
    def _lease(claimed: Claimed) -> dict[str, Any]:
        """The parameters of `statements.OURS` for this attempt."""
        inv = claimed.invocation
        return {"_id": inv.id, "_attempt": claimed.attempt, "_worker": inv.worker_id}

    def succeed(
        self, s: Session | Connection, claimed: Claimed, result: dict[str, Any] | None
    ) -> bool:
        """Record success inside the caller's unit of work; False if the lease was lost."""
        if self.db.dialect == "postgresql":
            params = {**self._lease(claimed), "_now": self.db.clock(), "_result": result}
            return s.execute(statements.SUCCEED_AND_CLOSE, params).first() is not None
        return succeed_one(s, self._success(claimed, result), self.db.clock())

    def succeed_alone(self, claimed: Claimed, result: dict[str, Any] | None) -> bool:
        """Record success when the function wrote nothing else: no unit of work to join.

        On PostgreSQL one autocommitted statement; a lost lease changes nothing. With group
        commit, one row of the process's next batch.
        """
        if self._group is not None:
            with contextlib.suppress(CommitterClosed):  # closed: the single statement below
                return bool(self._group.submit(self._success(claimed, result)))
        if self._success_statement is not None:
            params = {**self._lease(claimed), "_now": self.db.clock(), "_result": result}
            with self.db.driver_connection() as driver:
                return self._success_statement.first(driver, params) is not None
        with translate_errors(), self.db.engine.begin() as connection:
            return self.succeed(connection, claimed, result)

    def succeed_later(
        self, claimed: Claimed, result: dict[str, Any] | None
    ) -> concurrent.futures.Future[bool] | None:
        """As `succeed_alone`, without waiting: a future of whether it was recorded.

        None if successes are not batched here (SQLite, `success_batch_ms` 0, or closed):
        then call `succeed_alone`. An outage is ridden out for about 15 s before the
        future raises `StoreUnavailable` (`claim_batches.write_riding_outages`).
        """
        if self._later is None:
            return None
        try:
            return self._later.submit_later(self._success(claimed, result))
        except CommitterClosed:
            return None

    def fail(
        self,
        claimed: Claimed,
        *,
        outcome: str,
        error: dict[str, Any],
        traceback: str | None,
        retry_at: datetime | None,
    ) -> str | None:
        """Record a failed attempt; retry at `retry_at`, or fail for good if None.

        Returns the new status, or None if the lease was lost meanwhile.
        """
        now = self.db.clock()
        status = Status.RETRYING if retry_at is not None else Status.FAILED
        with self.db.session() as s:
            done = s.execute(
                sa.update(I)
                .where(statements.OURS)
                .values(
                    status=status,
                    error=error,
                    scheduled_for=retry_at,
                    finished_at=None if retry_at else now,
                    lease_expires_at=None,
                    dispatched_at=None,
                ),
                self._lease(claimed),
                # Nothing of this row is loaded in the session: no objects to update.
                execution_options={"synchronize_session": False},
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                return None
            close_attempt(
                s,
                claimed.invocation.id,
                claimed.attempt,
                self.db.clock(),
                outcome,
                error,
                traceback,
            )
        return status

    def attempt_outcome(self, invocation_id: str, attempt: int) -> tuple[str | None, str | None]:
        """The attempt's recorded outcome and its invocation's status now (None if unknown)."""
        with self.db.autocommit() as s:
            row = s.execute(
                sa.select(models.Attempt.outcome, I.status)
                .join(I, I.id == models.Attempt.invocation_id)
                .where(
                    models.Attempt.invocation_id == invocation_id, models.Attempt.number == attempt
                )
            ).one_or_none()
        if row is None:
            return None, None
        return row[0], row[1]
