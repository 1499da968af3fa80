"""Per-tenant limits, the accept-rate token buckets, and waiting and running counts.

A tenant's own limits are columns of `tenants` (migration 0011_limits); NULL follows the
deployment's `FERRY_DEFAULT_*` (`LimitDefaults`), and 0 means "unlimited" for the rate,
the concurrency and the waiting bound. `EffectiveLimits` is the two combined.

The accept rate is a token bucket per tenant in `rate_buckets`, shared by every gateway
process. Taking a token is one statement, atomic on both backends:

    INSERT INTO rate_buckets VALUES (:tenant, :burst - 1, :now)
    ON CONFLICT (tenant_id) DO UPDATE
      SET tokens = <refilled> - 1, refilled_at = :now
      WHERE <refilled> >= 1
    RETURNING tokens

where `<refilled>` is `min(burst, tokens + (now - refilled_at) * rate)`. No row back: no
token (a refused accept reads the bucket once more to say when the next one comes). The
row lock of the upsert serialises a tenant's accepts for one short statement; other
tenants' accepts touch other rows.

Counts read the partial index `ix_invocations_tenant_unfinished` (tenant, status,
function over unfinished rows only): a tenant's count costs its unfinished rows, and
`count_waiting` stops at its cap, so the accept path's check is bounded by the limit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from runtime.errors import RequestRejected, TenantNotFound
from runtime.settings import Settings
from runtime.store import models
from runtime.store.audit import AuditEntry, append_in
from runtime.store.db import Database
from runtime.store.models import UNFINISHED_SQL, Status

_T: sa.Table = models.Invocation.__table__  # type: ignore[assignment]
_TENANTS: sa.Table = models.Tenant.__table__  # type: ignore[assignment]
_BUCKETS: sa.Table = models.RateBucket.__table__  # type: ignore[assignment]

#: The tenant columns of the limits, in the order they are shown.
COLUMNS = ("rate_per_s", "burst", "concurrency", "max_waiting", "weight")
#: The largest whole-number limit (the columns are 32-bit integers).
MAX_LIMIT = 2**31 - 1
#: The largest accept rate, per second.
MAX_RATE_PER_S = 1_000_000.0
#: The largest weight in fair dispatch.
MAX_WEIGHT = 1000
#: States counted as waiting (and bounded by `max_waiting`).
WAITING = (Status.QUEUED, Status.SCHEDULED, Status.RETRYING)
# Literal SQL, not parameters: PostgreSQL uses a partial index only when it can prove the
# query's condition implies the index's, which it cannot for bound values.
WAITING_SQL = sa.text("status IN ('queued', 'scheduled', 'retrying')")
RUNNING_SQL = sa.text("status = 'running'")

#: Why a due invocation is not running yet (`invocations.waiting_reason`); fair dispatch
#: sets one when it passes an invocation over and clears it when it claims it.
WAITING_REASONS = {
    "tenant_concurrency": "its tenant has as many invocations running as its concurrency limit",
    "function_concurrency": "its function has as many running as the function's concurrency",
    "key_concurrency": "as many with the same concurrency key are running as the key allows",
    "fair_share": "other tenants' work goes first: worker slots are shared across tenants",
}


@dataclasses.dataclass(frozen=True)
class TenantLimits:
    """A tenant's own limits; None follows the deployment's default."""

    rate_per_s: float | None = None
    burst: int | None = None
    concurrency: int | None = None
    max_waiting: int | None = None
    weight: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> TenantLimits:
        return cls(**{name: getattr(row, name) for name in COLUMNS})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS}


@dataclasses.dataclass(frozen=True)
class EffectiveLimits:
    """The limits that hold for a tenant: its own, else the defaults. 0: unlimited.

    `burst` is decided too: when neither the tenant nor the deployment sets one, it is one
    second's worth of the rate (at least 1).
    """

    rate_per_s: float
    burst: int
    concurrency: int
    max_waiting: int
    weight: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LimitDefaults:
    """The deployment's `FERRY_DEFAULT_*` limits (0: unlimited; burst 0: one second's worth)."""

    rate_per_s: float = 0.0
    burst: int = 0
    concurrency: int = 0
    max_waiting: int = 0
    weight: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitDefaults:
        return cls(
            rate_per_s=settings.default_rate_per_s,
            burst=settings.default_burst,
            concurrency=settings.default_concurrency,
            max_waiting=settings.default_max_waiting,
            weight=settings.default_weight,
        )

    def for_tenant(self, own: TenantLimits) -> EffectiveLimits:
        """The limits that hold for a tenant with these own values."""

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        rate = float(pick(own.rate_per_s, self.rate_per_s))
        burst = int(pick(own.burst, self.burst)) or max(1, math.ceil(rate))
        return EffectiveLimits(
            rate_per_s=rate,
            burst=burst,
            concurrency=int(pick(own.concurrency, self.concurrency)),
            max_waiting=int(pick(own.max_waiting, self.max_waiting)),
            weight=int(pick(own.weight, self.weight)),
        )


@dataclasses.dataclass(frozen=True)
class Counts:
    """Invocations waiting (queued + scheduled + retrying) and running."""

    waiting: int = 0
    running: int = 0


def check_limit_values(values: Mapping[str, float | int | None]) -> None:
    """Refuse unknown names and values out of range (`RequestRejected`, saying which)."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise RequestRejected(f"no limit named {', '.join(sorted(unknown))}")
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestRejected(f"{name} must be a number or null")
        if name == "rate_per_s":
            if not (math.isfinite(value) and 0 <= value <= MAX_RATE_PER_S):
                raise RequestRejected(f"rate_per_s must be from 0 to {MAX_RATE_PER_S:g} per second")
            continue
        if value != int(value):
            raise RequestRejected(f"{name} must be a whole number")
        if name == "weight" and not 1 <= value <= MAX_WEIGHT:
            raise RequestRejected(f"weight must be from 1 to {MAX_WEIGHT}")
        if not 0 <= value <= MAX_LIMIT:
            raise RequestRejected(f"{name} must be from 0 to {MAX_LIMIT}")


def _refilled(rate: Any, burst: Any, now: Any) -> Any:
    """`min(burst, tokens + elapsed * rate)`; a clock behind `refilled_at` adds nothing."""
    elapsed = sa.case(
        (now > _BUCKETS.c.refilled_at, now - _BUCKETS.c.refilled_at), else_=sa.literal(0.0)
    )
    level = _BUCKETS.c.tokens + elapsed * rate
    return sa.case((level > burst, burst), else_=level)


def _take_tokens(dialect: str) -> Any:
    """Take `n` tokens of `tenant_id`'s bucket (refilled at `rate` up to `burst` by `now`),
    or none: one atomic upsert; no row returned when the bucket lacks them."""
    cost = sa.bindparam("n", type_=sa.Float())
    rate = sa.bindparam("rate", type_=sa.Float())
    burst = sa.bindparam("burst", type_=sa.Float())
    now = sa.bindparam("now", type_=sa.Float())
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_BUCKETS)
    refilled = _refilled(rate, burst, now)
    later = sa.case((now > _BUCKETS.c.refilled_at, now), else_=_BUCKETS.c.refilled_at)
    return (
        insert.values(
            tenant_id=sa.bindparam("tenant_id"),
            tokens=sa.bindparam("first", type_=sa.Float()),
            refilled_at=now,
        )
        .on_conflict_do_update(
            index_elements=[_BUCKETS.c.tenant_id],
            set_={"tokens": refilled - cost, "refilled_at": later},
            where=refilled >= cost,
        )
        .returning(_BUCKETS.c.tokens)
    )


_TAKE_TOKENS = {name: _take_tokens(name) for name in ("postgresql", "sqlite")}
_LEVEL = sa.select(
    _refilled(
        sa.bindparam("rate", type_=sa.Float()),
        sa.bindparam("burst", type_=sa.Float()),
        sa.bindparam("now", type_=sa.Float()),
    )
).where(_BUCKETS.c.tenant_id == sa.bindparam("tenant_id"))


class Limits:
    """Tenants' limits, their token buckets, and their waiting and running counts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the limits themselves ----------------------------------------------------------------

    def get(self, tenant_id: str) -> TenantLimits:
        """A tenant's own limits; `TenantNotFound` if there is no such tenant."""
        with self.db.statements() as connection:
            row = connection.execute(
                sa.select(*(_TENANTS.c[name] for name in COLUMNS)).where(_TENANTS.c.id == tenant_id)
            ).first()
        if row is None:
            raise TenantNotFound(f"no tenant {tenant_id!r}")
        return TenantLimits.from_row(row)

    def many(self, tenant_ids: Iterable[str] | None = None) -> dict[str, TenantLimits]:
        """Own limits of the tenants named (None: of every tenant), by tenant id."""
        query = sa.select(_TENANTS.c.id, *(_TENANTS.c[name] for name in COLUMNS))
        if tenant_ids is not None:
            query = query.where(_TENANTS.c.id.in_(list(tenant_ids)))
        with self.db.statements() as connection:
            return {row.id: TenantLimits.from_row(row) for row in connection.execute(query)}

    def customised(self) -> dict[str, TenantLimits]:
        """Own limits of the tenants that set at least one, by tenant id."""
        query = sa.select(_TENANTS.c.id, *(_TENANTS.c[name] for name in COLUMNS)).where(
            sa.or_(*(_TENANTS.c[name].is_not(None) for name in COLUMNS))
        )
        with self.db.statements() as connection:
            return {row.id: TenantLimits.from_row(row) for row in connection.execute(query)}

    def set(
        self,
        tenant_id: str,
        values: Mapping[str, float | int | None],
        *,
        audit: AuditEntry | None = None,
    ) -> TenantLimits:
        """Set the limits named (None: back to the default); the others keep their value.

        `audit`: the record of this change, committed with it.
        """
        check_limit_values(values)
        with self.db.session() as s:
            row = s.get(models.Tenant, tenant_id)
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            for name, value in values.items():
                setattr(row, name, value)
            if audit is not None:
                append_in(s, audit, self.db.clock())
            return TenantLimits.from_row(row)

    # --- the accept rate ----------------------------------------------------------------------

    def take_tokens(
        self, tenant_id: str, n: int, *, rate_per_s: float, burst: int, now_s: float
    ) -> float:
        """Take `n` tokens at once (one per new invocation), or none: 0.0 if taken, else
        seconds until `n` are due (`math.inf`: `n` is over `burst`, so never).

        `now_s` is seconds since the epoch. One atomic statement; a refusal reads once more.
        """
        if n <= 0:
            return 0.0
        params = {
            "tenant_id": tenant_id,
            "rate": rate_per_s,
            "burst": float(burst),
            "first": float(burst) - n,
            "n": float(n),
            "now": now_s,
        }
        if n > burst:
            return math.inf
        with self.db.statements() as connection:
            taken = connection.execute(_TAKE_TOKENS[self.db.dialect], params).first()
            if taken is not None:
                return 0.0
            level = connection.execute(_LEVEL, params).scalar()
        missing = float(n) - float(level if level is not None else 0.0)
        return max(missing, 0.0) / rate_per_s if rate_per_s > 0 else 1.0

    # --- counts -------------------------------------------------------------------------------

    def count_waiting(self, tenant_id: str, *, function: str | None = None, cap: int) -> int:
        """The tenant's (or its function's) waiting invocations, counted up to `cap` only."""
        inner = sa.select(sa.literal(1)).select_from(_T).where(_T.c.tenant_id == tenant_id)
        if function is not None:
            inner = inner.where(_T.c.function == function)
        inner = inner.where(WAITING_SQL).limit(cap)
        with self.db.statements() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count()).select_from(inner.subquery())
                ).scalar_one()
            )

    def counts(self, tenant_id: str, *, function: str | None = None) -> Counts:
        """The tenant's (or its function's) waiting and running invocations."""
        query = (
            sa.select(_T.c.status, sa.func.count())
            .where(_T.c.tenant_id == tenant_id, sa.text(UNFINISHED_SQL))
            .group_by(_T.c.status)
        )
        if function is not None:
            query = query.where(_T.c.function == function)
        with self.db.statements() as connection:
            by_status = {row[0]: int(row[1]) for row in connection.execute(query)}
        return _counts(by_status)

    def counts_by_tenant(self) -> dict[str, Counts]:
        """Waiting and running invocations of every tenant that has any, by tenant id.

        One statement over the unfinished rows (the partial index): its cost grows with
        the work in flight, not with the number of tenants or of finished invocations.
        """
        query = (
            sa.select(_T.c.tenant_id, _T.c.status, sa.func.count())
            .where(sa.text(UNFINISHED_SQL))
            .group_by(_T.c.tenant_id, _T.c.status)
        )
        by_tenant: dict[str, dict[str, int]] = {}
        with self.db.statements() as connection:
            for tenant_id, status, count in connection.execute(query):
                by_tenant.setdefault(tenant_id, {})[status] = int(count)
        return {tenant_id: _counts(by_status) for tenant_id, by_status in by_tenant.items()}

    # --- why an invocation waits --------------------------------------------------------------

    def mark_waiting(self, invocation_ids: Iterable[str], reason: str | None) -> int:
        """Record why these claimable invocations wait (None clears it); how many changed."""
        if reason is not None and reason not in WAITING_REASONS:
            raise ValueError(f"unknown waiting reason {reason!r}")
        ids = list(invocation_ids)
        if not ids:
            return 0
        statement = (
            sa.update(_T)
            .where(_T.c.id.in_(ids), WAITING_SQL, _T.c.waiting_reason.is_distinct_from(reason))
            .values(waiting_reason=reason)
        )
        with self.db.statements() as connection:
            return int(connection.execute(statement).rowcount)


def _counts(by_status: Mapping[str, int]) -> Counts:
    return Counts(
        waiting=sum(by_status.get(status, 0) for status in WAITING),
        running=by_status.get(Status.RUNNING, 0),
    )
