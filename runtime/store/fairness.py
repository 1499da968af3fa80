"""Fair dispatch in the store: send windows, held invocations, and their release.

A tenant may have at most `window` invocations sent to the broker and not yet started;
the rest wait in the store unsent (`dispatched_at IS NULL`) with a `waiting_reason`, and are
released oldest first when the window has room (docs/fairness.md). Windows are soft: two
releasers may both see the same free place. The hard limits are in the claim
(`runtime.store.claims`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa

from runtime.store import models, statements
from runtime.store.db import Database
from runtime.store.driver import prepared
from runtime.store.models import CLAIMABLE, Status
from runtime.store.sweep import Dispatch

_T: sa.Table = models.Invocation.__table__  # type: ignore[assignment]


class WaitReason(enum.StrEnum):
    """Why a due invocation is held unsent (`waiting_reason`; the keys of
    `runtime.store.limits.WAITING_REASONS`, whose text the dashboard shows)."""

    #: Its tenant's send window is full: it waits its turn (round-robin across tenants).
    FAIR_SHARE = "fair_share"
    #: Its tenant runs as many invocations as its concurrency limit allows.
    TENANT_CONCURRENCY = "tenant_concurrency"
    #: Its function runs as many of the tenant's invocations as its limit allows.
    FUNCTION_CONCURRENCY = "function_concurrency"
    #: Its concurrency key runs as many invocations as the function allows per key.
    KEY_CONCURRENCY = "key_concurrency"


def _in_states(column: Any, *states: Status) -> Any:
    """`status IN ('a', 'b')` written into the SQL text, so the partial indexes apply."""
    return column.in_([sa.literal_column(f"'{s.value}'") for s in states])


def sent_count(tenant_id: Any, window: Any) -> Any:
    """How many of the tenant's waiting invocations are sent, counting at most `window`."""
    return statements.sent_of_tenant(tenant_id, window).scalar_subquery()


@dataclasses.dataclass(frozen=True)
class Running:
    """A tenant's running invocations: in all, per function, per (function, key)."""

    total: int
    by_function: dict[str, int]
    by_key: dict[tuple[str, str], int]


class Fairness:
    """The statements of fair dispatch (`runtime.dispatch.Dispatcher`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def admit(self, invocation_id: str, tenant_id: str, window: int) -> bool:
        """Mark a just-accepted invocation sent if its tenant's window has room, else held.

        True: send it now. False: it is held (`fair_share`) for a release to send. One
        statement.
        """
        params = {
            "_id": invocation_id,
            "_tenant": tenant_id,
            "_window": window,
            "_now": self.db.clock(),
        }
        with self.db.statements() as connection:
            row = connection.execute(_admit(), params).first()
        return row is not None and row.dispatched_at is not None

    def hold(self, invocation_id: str, reason: WaitReason) -> None:
        """Put a sent invocation back to held (its send failed or a limit refused it)."""
        with self.db.statements() as connection:
            connection.execute(
                sa.update(_T)
                .where(_T.c.id == invocation_id, _T.c.status.in_(CLAIMABLE))
                .values(dispatched_at=None, waiting_reason=reason)
            )

    def release(
        self,
        tenant_id: str,
        *,
        window: int,
        cap: int | None = None,
        blocked_functions: Collection[str] = (),
        blocked_keys: Collection[tuple[str, str]] = (),
    ) -> list[Dispatch]:
        """Mark sent and return the tenant's oldest held due invocations its window admits.

        At most `window` minus the tenant's sent ones, and at most `cap`; none of
        `blocked_functions` nor of the (function, key) pairs in `blocked_keys`. One
        statement.
        """
        if cap is not None and cap <= 0:
            return []
        params = {"_tenant": tenant_id, "_window": window, "_now": self.db.clock(), "_cap": cap}
        if blocked_functions or blocked_keys:
            released = _release(
                self.db.dialect, cap is not None, tuple(blocked_functions), tuple(blocked_keys)
            )
        elif self.db.dialect == "postgresql":
            # The hot path (after every few claims of a worker when no limit is in play):
            # built once, run by psycopg (`runtime.store.driver`).
            statement = prepared(_cached_release(self.db.dialect, cap is not None), self.db.engine)
            with self.db.driver_connection() as connection:
                found = statement.rows(connection, params)
            return _dispatches(found)
        else:
            released = _cached_release(self.db.dialect, cap is not None)
        with self.db.statements() as connection:
            rows = connection.execute(released, params).all()
        return _dispatches([dict(row._mapping) for row in rows])

    def running(self, tenant_id: str) -> Running:
        """The tenant's running invocations, counted by function and concurrency key."""
        with self.db.statements() as connection:
            rows = connection.execute(
                sa.select(_T.c.function, _T.c.concurrency_key, sa.func.count())
                .where(_T.c.tenant_id == tenant_id, _in_states(_T.c.status, Status.RUNNING))
                .group_by(_T.c.function, _T.c.concurrency_key)
            ).all()
        by_function: dict[str, int] = {}
        by_key: dict[tuple[str, str], int] = {}
        for function, key, count in rows:
            by_function[function] = by_function.get(function, 0) + count
            if key is not None:
                by_key[(function, key)] = count
        return Running(sum(by_function.values()), by_function, by_key)


def _dispatches(rows: Collection[Mapping[str, Any]]) -> list[Dispatch]:
    """The released rows as the dispatcher sends them, oldest first."""
    ordered = sorted(rows, key=lambda row: row["created_at"])
    return [Dispatch(row["id"], row["tenant_id"], row["function"], row["queue"]) for row in ordered]


@functools.cache
def _cached_release(dialect: str, capped: bool) -> Any:
    return _release(dialect, capped, (), ())


def _release(
    dialect: str,
    capped: bool,
    blocked_functions: tuple[str, ...],
    blocked_keys: tuple[tuple[str, str], ...],
) -> Any:
    """Mark sent the tenant's (`_tenant`) oldest held due invocations its window admits.

    At most `_window` minus its sent ones, and at most `_cap` if `capped`; at `_now`.
    """
    now = sa.bindparam("_now", type_=_T.c.dispatched_at.type)
    free: Any = sa.bindparam("_window") - sent_count(
        sa.bindparam("_tenant"), sa.bindparam("_window")
    )
    if capped:
        cap: Any = sa.bindparam("_cap")
        free = sa.case((free > cap, cap), else_=free)
    held = sa.alias(_T, "held")
    pick = (
        sa.select(held.c.id)
        .where(
            held.c.tenant_id == sa.bindparam("_tenant"),
            _in_states(held.c.status, *CLAIMABLE),
            held.c.dispatched_at.is_(None),
            sa.or_(held.c.scheduled_for.is_(None), held.c.scheduled_for <= now),
            held.c.tenant_id.in_(statements.ACTIVE_TENANT_IDS),
        )
        .order_by(held.c.created_at)
        .limit(free)
    )
    if blocked_functions:
        pick = pick.where(held.c.function.not_in(list(blocked_functions)))
    if blocked_keys:
        pick = pick.where(
            sa.tuple_(held.c.function, sa.func.coalesce(held.c.concurrency_key, "")).not_in(
                list(blocked_keys)
            )
        )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        sa.update(_T)
        .where(_T.c.id.in_(pick))
        .values(
            dispatched_at=now,
            waiting_reason=None,
            status=sa.case(
                (_T.c.status == Status.SCHEDULED, Status.QUEUED.value), else_=_T.c.status
            ),
        )
        .returning(_T.c.id, _T.c.tenant_id, _T.c.function, _T.c.queue, _T.c.created_at)
    )


@functools.cache
def _admit() -> Any:
    """Mark `_id` sent at `_now`, or held (`fair_share`) if `_tenant` has `_window` others sent."""
    others = sa.alias(_T, "others")
    sent_others = (
        sa.select(sa.literal(1).label("one"))
        .where(
            others.c.tenant_id == sa.bindparam("_tenant"),
            _in_states(others.c.status, *CLAIMABLE),
            others.c.dispatched_at.is_not(None),
            others.c.id != sa.bindparam("_id"),
        )
        .limit(sa.bindparam("_window"))
        .subquery("sent_others")
    )
    full = sa.select(sa.func.count()).select_from(sent_others).scalar_subquery() >= sa.bindparam(
        "_window"
    )
    return (
        sa.update(_T)
        .where(_T.c.id == sa.bindparam("_id"), _T.c.status.in_(CLAIMABLE))
        .values(
            dispatched_at=sa.case(
                (full, None), else_=sa.bindparam("_now", type_=_T.c.dispatched_at.type)
            ),
            waiting_reason=sa.case((full, WaitReason.FAIR_SHARE.value), else_=None),
        )
        .returning(_T.c.dispatched_at)
    )
