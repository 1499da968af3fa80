"""The hot path's statements, built once: building one per call costs more than running it.

Accept, claim and success run for every invocation, so each is one prebuilt Core
statement where the database allows it. On PostgreSQL the claim and the success are each
one statement (a data-modifying CTE writes the invocation and its attempt together) and
run outside an explicit transaction: one round trip each instead of four. SQLite has no
data-modifying CTEs, so there each is two statements in one transaction.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from runtime.store import models
from runtime.store.driver import json_text
from runtime.store.models import CLAIMABLE, Status

I = models.Invocation  # noqa: E741 - the table most statements here are about


#: The JSON columns of `invocations`: in a `json_to_recordset` document, their JSON text.
RECORDSET_JSON = frozenset(c.name for c in I.__table__.columns if isinstance(c.type, sa.JSON))


@functools.cache
def invocation_record() -> str:
    """The columns of `invocations` as a PostgreSQL record type, for `json_to_recordset(...)
    AS x(...)` (the batch inserts: `runtime.store.batches`, `runtime.store.accept_batches`).

    A JSON column is declared `text` and carries its value's JSON text
    (`recordset_row`), cast back by `recordset_column`: read as `json`, PostgreSQL converts
    the strings inside it to text, and fails on a `\\u0000` that an input may hold and the
    `json` type stores as it is.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return ", ".join(
        f'"{c.name}" ' + ("text" if c.name in RECORDSET_JSON else c.type.compile(dialect=dialect))
        for c in I.__table__.columns
    )


def recordset_column(alias: str, name: str) -> str:
    """The SQL of column `name` of a row of `invocation_record` named `alias`."""
    column = f'{alias}."{name}"'
    return f"{column}::json" if name in RECORDSET_JSON else column


def recordset_row(values: dict[str, Any]) -> dict[str, Any]:
    """An invocation's INSERT values as a row of a `json_to_recordset` document."""
    row = dict(values)
    for name in RECORDSET_JSON:
        value = row.get(name)
        if value is not None:
            row[name] = json_text(value)
    return row


@functools.cache
def insert_for_active_tenant(dialect: str, admit: bool = False, key_checked: bool = False) -> Any:
    """`INSERT ... SELECT :values WHERE <tenant active> ON CONFLICT DO NOTHING RETURNING id`.

    Built once per dialect: building and caching a statement per call costs more than
    running it. A duplicate key or an inactive tenant inserts nothing and returns no row.

    `admit` (fair dispatch, docs/fairness.md): the same statement decides whether a due
    invocation is sent now or held. It is marked sent (`dispatched_at` = the given one)
    only while fewer than `_window` of its tenant's waiting invocations are sent, else
    stored held with `waiting_reason` `fair_share`; RETURNING says which. One round trip,
    as with fairness off.

    `key_checked`: only while the API key `_key_id` is neither revoked nor expired, so a
    gateway may take the caller's key from memory and still refuse a key revoked a
    moment ago (`runtime.keycache`): the write itself is the check.
    """
    table = I.__table__
    names = [column.key for column in table.columns]
    # PostgreSQL types the selected parameters only when told; SQLite's CAST would turn a
    # datetime's ISO text into a number, and SQLite needs no type anyway.
    typed = dialect == "postgresql"
    selected: dict[str, Any] = {}
    for name in names:
        param = sa.bindparam(name, type_=table.c[name].type)
        selected[name] = sa.cast(param, param.type) if typed else param
    active: Any = sa.exists().where(
        models.Tenant.id == sa.bindparam("tenant_id"),
        models.Tenant.status == models.TenantStatus.ACTIVE,
    )
    if key_checked:
        keys = models.ApiKey
        active = sa.and_(
            active,
            sa.exists().where(
                keys.id == sa.bindparam("_key_id"),
                keys.revoked_at.is_(None),
                sa.or_(keys.expires_at.is_(None), keys.expires_at > selected["created_at"]),
            ),
        )
    insert = postgresql.insert(I) if typed else sqlite.insert(I)
    if not admit:
        source = sa.select(*(value.label(name) for name, value in selected.items())).where(active)
        return insert.from_select(names, source).on_conflict_do_nothing().returning(table.c.id)
    sent = sent_of_tenant(sa.bindparam("tenant_id"), sa.bindparam("_window")).subquery("sent")
    due = selected["dispatched_at"].is_not(None)
    room = sent.c.n < sa.bindparam("_window")
    selected["dispatched_at"] = sa.case((room, selected["dispatched_at"]), else_=sa.null())
    selected["waiting_reason"] = sa.case(
        (sa.and_(due, sa.not_(room)), sa.literal("fair_share")), else_=selected["waiting_reason"]
    )
    source = (
        sa.select(*(value.label(name) for name, value in selected.items()))
        .select_from(sent)
        .where(active)
    )
    return (
        insert.from_select(names, source)
        .on_conflict_do_nothing()
        .returning(table.c.id, table.c.dispatched_at)
    )


def sent_of_tenant(tenant_id: Any, window: Any) -> Any:
    """`SELECT count(*) AS n` of the tenant's waiting invocations that are sent, at most `window`."""
    sent = sa.alias(I.__table__, "sent_first")
    first = (
        sa.select(sa.literal(1).label("one"))
        .where(
            sent.c.tenant_id == tenant_id,
            states_in(sent.c.status, CLAIMABLE),
            sent.c.dispatched_at.is_not(None),
        )
        .limit(window)
        .subquery("sent_window")
    )
    return sa.select(sa.func.count().label("n")).select_from(first)


def states_in(column: Any, states: Any) -> Any:
    """`column IN ('a', 'b')` with the states in the SQL text when the statement is built.

    `column.in_(list)` binds an expanding parameter that SQLAlchemy renders anew on every
    execution (about 2 % of a worker's CPU on the claim); the states are constants.
    """
    return column.in_([sa.literal_column(f"'{Status(state).value}'") for state in states])


_T: sa.Table = I.__table__  # type: ignore[assignment]
_A: sa.Table = models.Attempt.__table__  # type: ignore[assignment]
#: Tenants whose work may run now.
ACTIVE_TENANT_IDS = sa.select(models.Tenant.id).where(
    models.Tenant.status == models.TenantStatus.ACTIVE
)
#: What a claim writes: attempt `_now` for `_worker` until `_lease` (also the group
#: commit's batch claim, `runtime.store.batch_statements`).
CLAIMED_VALUES = {
    "status": Status.RUNNING,
    "attempts": _T.c.attempts + 1,
    "started_at": sa.bindparam("_now"),
    "finished_at": None,
    "lease_expires_at": sa.bindparam("_lease"),
    "worker_id": sa.bindparam("_worker"),
}
CLAIM = (
    sa.update(_T)
    .where(
        _T.c.id == sa.bindparam("_id"),
        states_in(_T.c.status, CLAIMABLE),
        sa.or_(_T.c.scheduled_for.is_(None), _T.c.scheduled_for <= sa.bindparam("_now")),
        # A suspended tenant's work waits; the sweep sends it again on resume.
        _T.c.tenant_id.in_(ACTIVE_TENANT_IDS),
    )
    .values(CLAIMED_VALUES)
    .returning(*_T.c)
)
ADD_ATTEMPT = sa.insert(_A)
#: The invocation is still in the attempt this worker claimed (its lease was not lost):
#: parameters `_id`, `_attempt`, `_worker`.
OURS = sa.and_(
    _T.c.id == sa.bindparam("_id"),
    _T.c.status == Status.RUNNING,
    _T.c.attempts == sa.bindparam("_attempt"),
    _T.c.worker_id == sa.bindparam("_worker"),
)
SUCCEED = (
    sa.update(_T)
    .where(OURS)
    .values(
        status=Status.SUCCEEDED,
        result=sa.bindparam("_result", type_=_T.c.result.type),
        error=None,
        finished_at=sa.bindparam("_now"),
        lease_expires_at=None,
    )
)
CLOSE_ATTEMPT = (
    sa.update(_A)
    .where(
        _A.c.invocation_id == sa.bindparam("_invocation_id"), _A.c.number == sa.bindparam("_number")
    )
    .values(
        finished_at=sa.bindparam("_now"),
        outcome=sa.bindparam("_outcome"),
        error=sa.bindparam("_error", type_=_A.c.error.type),
        traceback=sa.bindparam("_traceback"),
    )
)


# --- PostgreSQL: one statement each ------------------------------------------------------


def with_attempt_rows(claimed: Any) -> Any:
    """`SELECT` the rows of a claiming CTE, inserting each one's attempt row in the same
    statement (also the group commit's, `runtime.store.batch_statements`)."""
    return sa.select(claimed).add_cte(
        sa.insert(_A)
        .from_select(
            ["invocation_id", "tenant_id", "number", "worker_id", "started_at"],
            sa.select(
                claimed.c.id,
                claimed.c.tenant_id,
                claimed.c.attempts,
                claimed.c.worker_id,
                claimed.c.started_at,
            ),
        )
        .cte("attempt")
    )


#: The claim and its attempt row in one statement; returns the claimed invocation's row,
#: or none if it was not claimable.
CLAIM_WITH_ATTEMPT = with_attempt_rows(CLAIM.cte("claimed"))
#: `synchronous_commit` off for the statement's own transaction (PostgreSQL), set by the
#: statement itself: its commit returns before the WAL is on disk, with no round trip or
#: `SET LOCAL` of its own. Only for a write whose loss in a database crash recovery makes
#: good (docs/architecture.md, "A claim's commit"); a later commit that waits (a success)
#: flushes it too, since the WAL is written in order.
COMMIT_WITHOUT_WAITING = sa.func.set_config("synchronous_commit", "off", sa.true()).is_not(None)
#: `CLAIM_WITH_ATTEMPT` whose commit does not wait for the disk (PostgreSQL).
CLAIM_WITH_ATTEMPT_NOT_WAITING = CLAIM_WITH_ATTEMPT.where(COMMIT_WITHOUT_WAITING)

_succeeded = SUCCEED.returning(_T.c.id).cte("succeeded")
#: Success and the attempt's close in one statement; returns a row only if the lease was
#: still ours (else it changes nothing). The attempt is named by the parameters, and only
#: gated on the invocation's update: joined to it (`invocation_id IN (SELECT ...)`), the
#: planner read the whole attempts table per success whenever its statistics were older
#: than the table (a new database: 2.8 to 17 million rows read in a 6,000 drain, doubling
#: PostgreSQL's CPU per invocation).
SUCCEED_AND_CLOSE = (
    sa.update(_A)
    .where(
        _A.c.invocation_id == sa.bindparam("_id"),
        _A.c.number == sa.bindparam("_attempt"),
        sa.exists(sa.select(_succeeded.c.id)),
    )
    .values(finished_at=sa.bindparam("_now"), outcome="succeeded", error=None, traceback=None)
    .returning(_A.c.invocation_id)
    .add_cte(_succeeded)
)


# --- concurrency limits (docs/fairness.md) -------------------------------------------------

#: Serialises the limited claims of one tenant until the transaction ends (PostgreSQL);
#: `_key` names the tenant. 14 keeps these apart from other advisory locks.
LOCK_TENANT_CLAIMS = sa.select(
    sa.func.pg_advisory_xact_lock(14, sa.func.hashtext(sa.bindparam("_key", type_=sa.String)))
)


@functools.cache
def limited_claim(tenant: bool, function: bool, key: bool) -> Any:
    """`CLAIM`, only while fewer than the limits run: the tenant's, the function's, the key's.

    Parameters beyond `CLAIM`'s: `_tenant`, and `_tenant_limit`, `_function_limit`,
    `_key_limit` for the limits asked for. An invocation without a concurrency key is not
    limited by key.
    """
    others = sa.alias(_T, "others")

    def running(*where: Any) -> Any:
        return (
            sa.select(sa.func.count())
            .select_from(others)
            .where(
                others.c.tenant_id == sa.bindparam("_tenant"),
                others.c.status == sa.literal_column(f"'{Status.RUNNING.value}'"),
                *where,
            )
            .correlate(_T)
            .scalar_subquery()
        )

    checks = []
    if tenant:
        checks.append(running() < sa.bindparam("_tenant_limit", type_=sa.Integer))
    if function:
        same_function = others.c.function == _T.c.function
        checks.append(running(same_function) < sa.bindparam("_function_limit", type_=sa.Integer))
    if key:
        same_key = sa.and_(
            others.c.function == _T.c.function, others.c.concurrency_key == _T.c.concurrency_key
        )
        checks.append(
            sa.or_(
                _T.c.concurrency_key.is_(None),
                running(same_key) < sa.bindparam("_key_limit", type_=sa.Integer),
            )
        )
    return CLAIM.where(*checks)
