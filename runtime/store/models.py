"""SQL tables of the invocation store (SQLAlchemy 2 typed models).

The schema itself is owned by the Alembic migrations beside this file; a test checks that
the migrations and these models agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class TenantScoped:
    """Mixin for rows that belong to one tenant: a tenant session sees and writes only its own."""

    # Declared here too so tenant criteria can name the column on the mixin itself.
    tenant_id: Mapped[str] = mapped_column(String(63))


class Status(enum.StrEnum):
    """Where an invocation is in its life."""

    #: Accepted, to run at `scheduled_for` (delay, `at`, or a schedule's tick).
    SCHEDULED = "scheduled"
    #: Accepted and due; waiting for a worker.
    QUEUED = "queued"
    #: A worker holds it under a lease.
    RUNNING = "running"
    #: An attempt failed; the next one runs at `scheduled_for`.
    RETRYING = "retrying"
    #: Finished with a result. Final.
    SUCCEEDED = "succeeded"
    #: Out of attempts or failed permanently; kept for a manual retry.
    FAILED = "failed"
    #: Cancelled before it ran; can be retried.
    CANCELLED = "cancelled"


#: States a worker may claim an invocation from.
CLAIMABLE = (Status.QUEUED, Status.SCHEDULED, Status.RETRYING)
#: States that will not change again by themselves.
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
#: The rows the sweep's partial index covers: every state but the finished ones.
UNFINISHED_SQL = "status IN ('queued', 'scheduled', 'retrying', 'running')"
#: The rows retention's partial index covers: the finished ones (see `runtime.store.retention`).
FINISHED_SQL = "status IN ('succeeded', 'failed', 'cancelled')"
#: Fair dispatch's indexes (docs/fairness.md): waiting invocations held in the store, and
#: those sent to the broker and not yet started.
HELD_SQL = "dispatched_at IS NULL AND status IN ('queued', 'scheduled', 'retrying')"
SENT_SQL = "dispatched_at IS NOT NULL AND status IN ('queued', 'scheduled', 'retrying')"


class TenantStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=TenantStatus.ACTIVE)
    created_at: Mapped[datetime]
    #: Seconds this tenant's finished invocations are kept, per final status; 0 keeps
    #: them forever, NULL follows `FERRY_RETENTION_*_S` (see `runtime.store.retention`).
    retention_succeeded_s: Mapped[int | None] = mapped_column(Integer)
    retention_failed_s: Mapped[int | None] = mapped_column(Integer)
    retention_cancelled_s: Mapped[int | None] = mapped_column(Integer)
    # Limits (migration 0011_limits, `runtime.store.limits`): NULL follows the deployment's
    # `FERRY_DEFAULT_*`; 0 is "unlimited" for the rate, concurrency and max_waiting.
    #: Accepts per second (token bucket refill rate).
    rate_per_s: Mapped[float | None] = mapped_column(Float)
    #: Accepts that may come at once after a quiet spell (the bucket's size).
    burst: Mapped[int | None] = mapped_column(Integer)
    #: Invocations running at once across all workers.
    concurrency: Mapped[int | None] = mapped_column(Integer)
    #: Invocations waiting (queued + scheduled + retrying); over it, accepts are refused.
    max_waiting: Mapped[int | None] = mapped_column(Integer)
    #: Share of worker slots in weighted fair dispatch, relative to other tenants.
    weight: Mapped[int | None] = mapped_column(Integer)


class ApiKey(TenantScoped, Base):
    __tablename__ = "api_keys"

    #: The public part of the key (`fy_<id>_<secret>`), used to look it up.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: The tenant the key belongs to; NULL for an operator key (migration 0005_operators).
    #: A tenant session never sees operator keys: NULL matches no tenant.
    tenant_id: Mapped[str | None] = mapped_column(  # type: ignore[assignment]
        ForeignKey("tenants.id"), index=True, nullable=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    #: SHA-256 of the secret part; keys are 256-bit random, so a slow hash adds nothing.
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: Comma-separated scopes; `admin` only on an operator key.
    scopes: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Invocation(TenantScoped, Base):
    __tablename__ = "invocations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "function", "idempotency_key"),
        # The dispatcher's sweep: due and stale work, by state and time. Partial, so that
        # finishing an invocation adds no entry here (migration 0004 says why).
        Index(
            "ix_invocations_unfinished",
            "status",
            "scheduled_for",
            postgresql_where=sa.text(UNFINISHED_SQL),
            sqlite_where=sa.text(UNFINISHED_SQL),
        ),
        Index(
            "ix_invocations_parent_id",
            "parent_id",
            postgresql_where=sa.text("parent_id IS NOT NULL"),
            sqlite_where=sa.text("parent_id IS NOT NULL"),
        ),
        # Listing newest first per tenant.
        Index("ix_invocations_tenant_id_created_at", "tenant_id", "created_at"),
        # Limits: a tenant's (and a function's) waiting and running counts, read from the
        # unfinished rows alone (migration 0011_limits; `runtime.store.limits`).
        Index(
            "ix_invocations_tenant_unfinished",
            "tenant_id",
            "status",
            "function",
            postgresql_where=sa.text(UNFINISHED_SQL),
            sqlite_where=sa.text(UNFINISHED_SQL),
        ),
        # Retention: a tenant's finished invocations of one status, oldest first. Partial,
        # so unfinished work (the accept and claim path) adds no entry here.
        Index(
            "ix_invocations_finished",
            "tenant_id",
            "status",
            "finished_at",
            postgresql_where=sa.text(FINISHED_SQL),
            sqlite_where=sa.text(FINISHED_SQL),
        ),
        # Fair dispatch (migration 0012_fairness): a tenant's held invocations, released
        # oldest first, and its sent ones, counted against its window. Each holds only
        # those rows, so neither read passes over finished or running work.
        Index(
            "ix_invocations_held",
            "tenant_id",
            "created_at",
            postgresql_where=sa.text(HELD_SQL),
            sqlite_where=sa.text(HELD_SQL),
        ),
        Index(
            "ix_invocations_sent",
            "tenant_id",
            postgresql_where=sa.text(SENT_SQL),
            sqlite_where=sa.text(SENT_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    function: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the canonical input; a replay with another body is a conflict.
    request_hash: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(200))
    parent_id: Mapped[str | None] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer)
    #: `attempts` when the current retry budget began (a manual retry starts a new one).
    budget_start: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    scheduled_for: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: When it was last handed to the broker.
    dispatched_at: Mapped[datetime | None]
    #: A running attempt not finished by then is lost (its worker died).
    lease_expires_at: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(200))
    #: The value of its function's `concurrency_key` field in the input (NULL: none), for
    #: the per-key concurrency limit (migration 0011_limits).
    concurrency_key: Mapped[str | None] = mapped_column(String(255))
    #: Why a claimable invocation is held back (`runtime.store.limits.WAITING_REASONS`);
    #: NULL when nothing holds it. Set and cleared by fair dispatch.
    waiting_reason: Mapped[str | None] = mapped_column(String(32))


class Attempt(TenantScoped, Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("invocation_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    invocation_id: Mapped[str] = mapped_column(ForeignKey("invocations.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(63))
    number: Mapped[int]
    worker_id: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    #: `succeeded`, `failed`, `retrying`, `timed_out`, `lost`; null while running.
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[dict[str, Any] | None]
    traceback: Mapped[str | None] = mapped_column(Text)


# --- schedules (runtime.scheduling) ---------------------------------------------------------


class ScheduleState(Base):
    """What the store knows of one schedule defined in code: operator state and progress.

    The definition itself (cron, time zone, input) lives in `schedules/`; this row keeps
    what must survive restarts and be shared by every scheduler process.
    """

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    paused_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    #: Every tick up to this instant is done: fired, or passed over (paused, missed).
    last_tick_at: Mapped[datetime | None]
    #: When the schedule last made invocations (a tick or a manual trigger).
    last_run_at: Mapped[datetime | None]
    last_invocation_id: Mapped[str | None] = mapped_column(String(36))
    #: Set when a scheduler started without this schedule in its code; cleared on return.
    removed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ScheduleRun(TenantScoped, Base):
    """One invocation a schedule made: its history, readable per tenant."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        # A schedule's history, newest first, for admins and for one tenant.
        Index("ix_schedule_runs_schedule_id_tick_at", "schedule_id", "tick_at"),
        Index(
            "ix_schedule_runs_tenant_id_schedule_id_tick_at", "tenant_id", "schedule_id", "tick_at"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    #: The tick it was made for; for a manual trigger, when it was triggered.
    tick_at: Mapped[datetime]
    #: `tick` or `manual`.
    kind: Mapped[str] = mapped_column(String(16))
    invocation_id: Mapped[str] = mapped_column(
        ForeignKey("invocations.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime]


class RateBucket(Base):
    """A tenant's accept-rate token bucket, shared by every gateway process.

    `tokens` as of `refilled_at` (seconds since the epoch); one atomic upsert per accept
    refills and takes a token (`runtime.store.limits.Limits.take_tokens`).
    """

    __tablename__ = "rate_buckets"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    tokens: Mapped[float] = mapped_column(Float)
    refilled_at: Mapped[float] = mapped_column(Float)


class WorkerState(enum.StrEnum):
    """What a worker process last said about itself (see `runtime.recovery.heartbeat`)."""

    #: Consuming; `last_seen_at` is its latest heartbeat.
    RUNNING = "running"
    #: Draining after SIGTERM: it takes no new work and finishes what it holds.
    STOPPING = "stopping"
    #: Exited cleanly. Final.
    STOPPED = "stopped"
    #: Stopped beating without saying goodbye (killed, crashed, hung); marked by another worker.
    LOST = "lost"


class Worker(Base):
    """A worker process and its latest heartbeat; rows are pruned some time after it ends."""

    __tablename__ = "workers"
    __table_args__ = (
        # Stale and prunable workers, and the live ones the dashboard lists.
        Index("ix_workers_state_last_seen_at", "state", "last_seen_at"),
    )

    #: The runtime's worker id (`host:pid:random`), also written on the attempts it runs.
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: Comma-separated queues it consumes.
    queues: Mapped[str] = mapped_column(String(200))
    threads: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16))
