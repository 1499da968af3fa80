"""Completion callbacks' rows: one per invocation that asked for one, and its delivery state.

A row is written with its invocation, in the same transaction, with state `pending`;
delivery (`runtime.callbacks`) waits until the invocation is finished, then takes due rows
here (`take_due`, `FOR UPDATE SKIP LOCKED` on PostgreSQL, pushing `next_attempt_at` ahead
so no other deliverer takes them meanwhile) and records each outcome (`record`). The row
goes with its invocation (`ON DELETE CASCADE`).
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from runtime.store import models
from runtime.store.db import Database
from runtime.store.models import FINISHED, Base
from runtime.store.views import InvocationView

I = models.Invocation  # noqa: E741 - the invocation each callback reports


class CallbackState(enum.StrEnum):
    #: Not delivered yet: waiting for the invocation to finish, or for the next try.
    PENDING = "pending"
    #: The receiver answered 2xx. Final.
    DELIVERED = "delivered"
    #: Out of attempts, or refused for good (a 4xx, a refused address). Final.
    FAILED = "failed"


class InvocationCallback(Base):
    """Where to report an invocation's outcome, and how delivering it went."""

    __tablename__ = "invocation_callbacks"
    __table_args__ = (
        # What delivery looks for: pending rows by when they are next due. Partial, so
        # delivered and failed rows add no entry.
        Index(
            "ix_invocation_callbacks_pending",
            "next_attempt_at",
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        ),
    )

    invocation_id: Mapped[str] = mapped_column(
        ForeignKey("invocations.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(String(63))
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Not tried before then (backoff, or another deliverer holding it).
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


@dataclasses.dataclass(frozen=True)
class CallbackView:
    """An invocation's callback as the API shows it."""

    url: str
    state: str
    attempts: int
    last_error: str | None
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row: InvocationCallback) -> CallbackView:
        return cls(row.url, row.state, row.attempts, row.last_error, row.delivered_at)


@dataclasses.dataclass(frozen=True)
class DueCallback:
    """A callback to deliver now: the finished invocation, where, and which try this is."""

    invocation: InvocationView
    url: str
    attempt: int


def insert_in(
    connection: Connection, invocation_id: str, tenant_id: str, url: str, now: datetime
) -> None:
    """Add a pending callback for a new invocation, in the caller's transaction."""
    connection.execute(
        sa.insert(InvocationCallback).values(
            invocation_id=invocation_id,
            tenant_id=tenant_id,
            url=url,
            state=CallbackState.PENDING,
            attempts=0,
            # Due as soon as the invocation finishes; until then it is not picked.
            next_attempt_at=now,
        )
    )


class Callbacks:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, invocation_id: str) -> CallbackView | None:
        with self.db.autocommit() as s:
            row = s.get(InvocationCallback, invocation_id)
            return None if row is None else CallbackView.from_row(row)

    def take_due(self, *, hold_s: float, limit: int = 20) -> list[DueCallback]:
        """Pending callbacks of finished invocations that are due; held for `hold_s`.

        Holding pushes `next_attempt_at` ahead and counts the attempt, so a deliverer that
        dies mid-request leaves the row to be tried again after `hold_s`, not lost.
        """
        now = self.db.clock()
        C = InvocationCallback
        with self.db.session() as s:
            query = (
                sa.select(C, I)
                .join(I, I.id == C.invocation_id)
                .where(
                    C.state == CallbackState.PENDING,
                    C.next_attempt_at <= now,
                    I.status.in_([status.value for status in FINISHED]),
                )
                .order_by(C.next_attempt_at)
                .limit(limit)
            )
            if s.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=C, skip_locked=True)
            due = []
            for callback, invocation in s.execute(query).all():
                callback.attempts += 1
                callback.next_attempt_at = now + timedelta(seconds=hold_s)
                due.append(
                    DueCallback(
                        InvocationView.from_row(invocation), callback.url, callback.attempts
                    )
                )
        return due

    def record(
        self,
        invocation_id: str,
        state: CallbackState,
        *,
        error: str | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        """Record one delivery attempt's outcome; `retry_in_s` with `pending` sets the wait."""
        now = self.db.clock()
        values: dict[str, object] = {"state": state, "last_error": error}
        if state == CallbackState.DELIVERED:
            values["delivered_at"] = now
        if retry_in_s is not None:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in_s)
        with self.db.session() as s:
            s.execute(
                sa.update(InvocationCallback)
                .where(InvocationCallback.invocation_id == invocation_id)
                .values(**values)
            )
