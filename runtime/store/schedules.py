"""Schedules in the store: operator state, progress, and the runs they made.

Every change is one conditional statement, so scheduler processes and operators can act
at the same time: the tick cursor only moves forward, a run is recorded once per
invocation, and a pause or delete is a timestamp set once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from runtime.errors import ScheduleNotFound
from runtime.store import models
from runtime.store.audit import AuditEntry, append_in
from runtime.store.db import Database
from runtime.store.views import InvocationView

S = models.ScheduleState
R = models.ScheduleRun


@dataclasses.dataclass(frozen=True)
class ScheduleStateView:
    id: str
    paused_at: datetime | None
    deleted_at: datetime | None
    last_tick_at: datetime | None
    last_run_at: datetime | None
    last_invocation_id: str | None
    removed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: models.ScheduleState) -> ScheduleStateView:
        return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclasses.dataclass(frozen=True)
class ScheduleRunView:
    """One invocation a schedule made, with the invocation as it is now."""

    schedule_id: str
    tenant_id: str
    tick_at: datetime
    #: `tick` or `manual`.
    kind: str
    created_at: datetime
    invocation: InvocationView

    @property
    def lateness_ms(self) -> int | None:
        """How long after its due time the invocation started (jitter included)."""
        inv = self.invocation
        if inv.started_at is None or inv.scheduled_for is None:
            return None
        return max(0, int((inv.started_at - inv.scheduled_for).total_seconds() * 1000))


def _later(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or current < candidate else current


def _insert_ignoring_duplicates(
    s: Session, model: Any, values: dict[str, Any], unique: list[str]
) -> None:
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    s.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=unique))


class Schedules:
    """Schedule state and runs over one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- registration -----------------------------------------------------------------------

    def register(self, ids: Collection[str], now: datetime) -> None:
        """Make the store agree with the schedules in the code.

        A new schedule starts counting ticks now, so it never fires for the time before
        it existed. A schedule missing from the code is marked removed; when it comes
        back it also starts from now, and keeps its paused or deleted state.
        """
        wanted = set(ids)
        with self.db.session() as s:
            rows = {row.id: row for row in s.scalars(sa.select(S))}
            for schedule_id in sorted(wanted - rows.keys()):
                self._insert(s, schedule_id, now)
            for schedule_id, row in rows.items():
                if schedule_id in wanted and row.removed_at is not None:
                    row.removed_at = None
                    row.last_tick_at = _later(row.last_tick_at, now)
                    row.updated_at = now
                elif schedule_id not in wanted and row.removed_at is None:
                    row.removed_at = now
                    row.updated_at = now

    def _insert(self, s: Session, schedule_id: str, now: datetime) -> None:
        values = {"id": schedule_id, "last_tick_at": now, "created_at": now, "updated_at": now}
        _insert_ignoring_duplicates(s, S, values, ["id"])

    def ensure(self, schedule_id: str, now: datetime) -> ScheduleStateView:
        """The state of a schedule, registering it first if no scheduler has yet."""
        with self.db.session() as s:
            row = s.get(S, schedule_id)
            if row is None:
                self._insert(s, schedule_id, now)
                row = s.get(S, schedule_id)
            if row is None:  # only if deleted by hand between the two statements
                raise ScheduleNotFound(f"no schedule {schedule_id!r}")
            return ScheduleStateView.from_row(row)

    # --- reading ------------------------------------------------------------------------------

    def get(self, schedule_id: str) -> ScheduleStateView | None:
        with self.db.session() as s:
            row = s.get(S, schedule_id)
            return None if row is None else ScheduleStateView.from_row(row)

    def states(self) -> dict[str, ScheduleStateView]:
        with self.db.session() as s:
            return {row.id: ScheduleStateView.from_row(row) for row in s.scalars(sa.select(S))}

    def runs(self, schedule_id: str, tenant_id: str | None, *, limit: int) -> list[ScheduleRunView]:
        """The newest runs of a schedule; with `tenant_id`, only that tenant's."""
        query = (
            sa.select(R, models.Invocation)
            .join(models.Invocation, models.Invocation.id == R.invocation_id)
            .where(R.schedule_id == schedule_id)
            .order_by(R.tick_at.desc(), R.id.desc())
            .limit(limit)
        )
        with self.db.session(tenant_id) as s:
            return [
                ScheduleRunView(
                    schedule_id=run.schedule_id,
                    tenant_id=run.tenant_id,
                    tick_at=run.tick_at,
                    kind=run.kind,
                    created_at=run.created_at,
                    invocation=InvocationView.from_row(invocation),
                )
                for run, invocation in s.execute(query).all()
            ]

    # --- the scheduler's side -----------------------------------------------------------------

    def advance(self, schedule_id: str, tick: datetime, now: datetime) -> bool:
        """Mark every tick up to `tick` done; never moves the cursor back."""
        with self.db.session() as s:
            done = s.execute(
                sa.update(S)
                .where(S.id == schedule_id, sa.or_(S.last_tick_at.is_(None), S.last_tick_at < tick))
                .values(last_tick_at=tick, updated_at=now)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def record_run(
        self,
        *,
        schedule_id: str,
        tenant_id: str,
        tick_at: datetime,
        kind: str,
        invocation_id: str,
        now: datetime,
    ) -> None:
        """Remember that a tick (or a trigger) made this invocation; once per invocation."""
        with self.db.session() as s:
            _insert_ignoring_duplicates(
                s,
                R,
                {
                    "schedule_id": schedule_id,
                    "tenant_id": tenant_id,
                    "tick_at": tick_at,
                    "kind": kind,
                    "invocation_id": invocation_id,
                    "created_at": now,
                },
                ["invocation_id"],
            )
            s.execute(
                sa.update(S)
                .where(S.id == schedule_id, sa.or_(S.last_run_at.is_(None), S.last_run_at <= now))
                .values(last_run_at=now, last_invocation_id=invocation_id)
            )

    # --- operator actions ---------------------------------------------------------------------

    def _live_row(self, s: Session, schedule_id: str, now: datetime) -> models.ScheduleState:
        row = s.get(S, schedule_id, with_for_update=True)
        if row is None:
            self._insert(s, schedule_id, now)
            row = s.get(S, schedule_id, with_for_update=True)
        if row is None or row.deleted_at is not None:
            raise ScheduleNotFound(f"no schedule {schedule_id!r}")
        return row

    # Each operator action takes the `AuditEntry` of its record, appended in its transaction.

    def pause(
        self, schedule_id: str, now: datetime, *, audit: AuditEntry | None = None
    ) -> ScheduleStateView:
        """Stop firing until resumed; pausing a paused schedule changes nothing."""
        with self.db.session() as s:
            row = self._live_row(s, schedule_id, now)
            if row.paused_at is None:
                row.paused_at = now
                row.updated_at = now
            _append(s, audit, now)
            return ScheduleStateView.from_row(row)

    def resume(
        self, schedule_id: str, now: datetime, *, audit: AuditEntry | None = None
    ) -> ScheduleStateView:
        """Fire again from the next tick; the ticks of the pause are not caught up."""
        with self.db.session() as s:
            row = self._live_row(s, schedule_id, now)
            if row.paused_at is not None:
                row.paused_at = None
                row.last_tick_at = _later(row.last_tick_at, now)
                row.updated_at = now
            _append(s, audit, now)
            return ScheduleStateView.from_row(row)

    def delete(
        self, schedule_id: str, now: datetime, *, audit: AuditEntry | None = None
    ) -> ScheduleStateView:
        """Stop firing and leave the listings until restored."""
        with self.db.session() as s:
            row = self._live_row(s, schedule_id, now)
            row.deleted_at = now
            row.updated_at = now
            _append(s, audit, now)
            return ScheduleStateView.from_row(row)

    def restore(
        self, ids: Collection[str], now: datetime, *, audit: AuditEntry | None = None
    ) -> list[str]:
        """Bring back the deleted ones among `ids`, firing from the next tick; their ids.

        `audit`'s detail gets the ids restored.
        """
        wanted = list(ids)
        with self.db.session() as s:
            rows = s.scalars(
                sa.select(S)
                .where(S.id.in_(wanted), S.deleted_at.is_not(None))
                .order_by(S.id)
                .with_for_update()
            ).all()
            for row in rows:
                row.deleted_at = None
                row.last_tick_at = _later(row.last_tick_at, now)
                row.updated_at = now
            restored = [row.id for row in rows]
            if audit is not None:
                _append(s, audit.evolve(detail={"restored": restored}), now)
            return restored


def _append(s: Session, audit: AuditEntry | None, now: datetime) -> None:
    if audit is not None:
        append_in(s, audit, now)
