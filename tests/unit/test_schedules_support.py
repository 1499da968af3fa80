"""Helpers shared by the schedule tests: injected clocks and a scheduler over a runtime.

(No tests here; the name keeps it beside the schedule tests it serves.)
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from runtime.app import Runtime
from runtime.scheduling.definition import ScheduleBook, ScheduleDefinition, schedule
from runtime.scheduling.scheduler import Scheduler

ECHO = {"message": "tick"}


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> datetime:
        with self._lock:
            self._now = moment
            return moment

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now


class FastClock:
    """A clock running `speed` times faster than real time from `start`, until frozen."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start = start
        self.speed = speed
        self._origin = time.monotonic()
        self._frozen: datetime | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            elapsed = (time.monotonic() - self._origin) * self.speed
            return self.start + timedelta(seconds=elapsed)

    def freeze(self) -> datetime:
        moment = self()
        with self._lock:
            self._frozen = moment
        return moment


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def every_minute(schedule_id: str = "every-minute", **options: Any) -> ScheduleDefinition:
    """An echo every minute, in tenant `t-one` unless told otherwise."""
    values: dict[str, Any] = {
        "cron": "* * * * *",
        "function": "echo",
        "tenant": "t-one",
        "input": ECHO,
    }
    values.update(options)
    return schedule(schedule_id, **values)


def scheduler_for(runtime: Runtime, *definitions: ScheduleDefinition) -> Scheduler:
    """A scheduler of these definitions over the runtime's store, invocations and clock."""
    book = ScheduleBook.of(definitions, runtime.registry)
    return Scheduler.from_runtime(runtime, book)


def tick_keys(runtime: Runtime, schedule_id: str) -> list[tuple[str, str]]:
    """`(tenant, idempotency key)` of every invocation of a schedule's ticks, sorted."""
    with runtime.store.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT tenant_id, idempotency_key FROM invocations "
                "WHERE trigger = 'schedule' AND idempotency_key LIKE :prefix "
                "ORDER BY idempotency_key, tenant_id"
            ),
            {"prefix": f"schedule:{schedule_id}:2%"},
        )
        return [(row.tenant_id, row.idempotency_key) for row in rows]


def state_of(runtime: Runtime, schedule_id: str) -> Any:
    return runtime.store.schedules.states()[schedule_id]
