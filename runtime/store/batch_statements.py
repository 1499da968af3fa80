"""Group commit's statements (PostgreSQL): the claims or the successes of a batch in one.

Each is one data-modifying CTE over the batch's ids, so a batch costs one round trip and
one commit whatever its size. Each row is checked as the single statements check it
(`statements.CLAIM`, `statements.OURS`), under its row lock, re-checked after a concurrent
writer commits (READ COMMITTED), so a row that does not qualify is left out and the others
proceed.

The rows are not locked in a fixed order first: an explicit `SELECT ... ORDER BY id FOR
UPDATE` doubled PostgreSQL's CPU per invocation (docs/perf/README.md). Two statements
that lock several of the same rows in opposite orders (duplicate deliveries of two
invocations in two processes' batches, or a batch and a lease renewal) are then possible
in principle; PostgreSQL detects the cycle and fails one of them (`StoreUnavailable`),
which the caller handles as any outage: a claim's delivery is skipped and sent again by
the sweep, a success is tried again, a renewal is retried next round.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from runtime.store import models
from runtime.store.models import CLAIMABLE, Status
from runtime.store.statements import CLAIMED_VALUES, states_in, with_attempt_rows

_T: sa.Table = models.Invocation.__table__  # type: ignore[assignment]
_A: sa.Table = models.Attempt.__table__  # type: ignore[assignment]

_IDS = sa.bindparam("_ids", type_=postgresql.ARRAY(sa.String))


#: The state as an expression: the planner then finds a batch's rows by primary key. On the
#: bare column it chose the partial index of unfinished invocations, scanning the whole
#: backlog (and its dead entries) for every batch.
_STATE = sa.func.coalesce(_T.c.status, "")

#: The tenant's state per row, as a correlated subquery: PostgreSQL does not pull it up
#: into a join. As `tenant_id IN (SELECT ...)` it was a join, and the planner drove it from
#: the tenant's index, reading every invocation of the tenant for each batch (a 3,000-row
#: backlog: 2,992 rows filtered out per batch of 8; 2.1 ms, 0.44 ms by primary key).
_TENANT_STATE = (
    sa.select(models.Tenant.status)
    .where(models.Tenant.id == _T.c.tenant_id)
    .correlate(_T)
    .scalar_subquery()
)

_CLAIMABLE_NOW = (
    states_in(_STATE, CLAIMABLE),
    sa.or_(_T.c.scheduled_for.is_(None), _T.c.scheduled_for <= sa.bindparam("_now")),
    # A suspended tenant's work waits; the sweep sends it again on resume.
    _TENANT_STATE == models.TenantStatus.ACTIVE,
)
_claimed = (
    sa.update(_T)
    .where(_T.c.id == sa.any_(_IDS), *_CLAIMABLE_NOW)
    .values(CLAIMED_VALUES)
    .returning(*_T.c)
    .cte("claimed")
)
#: Claim the claimable ones of `_ids` for `_worker` until `_lease`, with their attempt rows;
#: returns the claimed invocations' rows (those not returned were not claimable).
CLAIM_BATCH = with_attempt_rows(_claimed)

_batch = (
    sa.func.unnest(
        _IDS,
        sa.bindparam("_attempts", type_=postgresql.ARRAY(sa.Integer)),
        sa.bindparam("_workers", type_=postgresql.ARRAY(sa.String)),
        sa.bindparam("_results", type_=postgresql.ARRAY(sa.Text)),
    )
    .table_valued(
        sa.column("id", sa.String),
        sa.column("attempt", sa.Integer),
        sa.column("worker", sa.String),
        sa.column("result", sa.Text),
    )
    .render_derived(name="batch")
)
_succeeded = (
    sa.update(_T)
    .where(
        # `statements.OURS`, per row of the batch (`_ids` again: the primary key finds them).
        _T.c.id == sa.any_(_IDS),
        _T.c.id == _batch.c.id,
        _STATE == str(Status.RUNNING),
        _T.c.attempts == _batch.c.attempt,
        _T.c.worker_id == _batch.c.worker,
    )
    .values(
        status=Status.SUCCEEDED,
        result=sa.cast(_batch.c.result, postgresql.JSON),
        error=None,
        finished_at=sa.bindparam("_now"),
        lease_expires_at=None,
    )
    .returning(_T.c.id, _T.c.attempts)
    .cte("succeeded")
)
#: Record the success of each (`_ids`, `_attempts`, `_workers`, `_results` as JSON text)
#: whose lease is still its claimer's, and close its attempt; returns the ids recorded.
SUCCEED_BATCH = (
    sa.update(_A)
    .where(
        # `_ids` again, so that the attempts are found by key even when the table's
        # statistics are older than it (`statements.SUCCEED_AND_CLOSE`).
        _A.c.invocation_id == sa.any_(_IDS),
        _A.c.invocation_id == _succeeded.c.id,
        _A.c.number == _succeeded.c.attempts,
    )
    .values(finished_at=sa.bindparam("_now"), outcome="succeeded", error=None, traceback=None)
    .returning(_A.c.invocation_id)
    .add_cte(_succeeded)
)
