"""Which ticks of a schedule to fire now: a pure function of definition, state and time.

The store keeps a cursor per schedule (`last_tick_at`): every tick up to it is done.
The ticks due are those after the cursor up to now. Of those:

- a tick noticed within `misfire_grace_s` of its time is on time and fires;
- older ones were missed (no scheduler ran, or none reached them in time). `skip`
  drops them; `run_once` fires one run for all of them, for the latest missed tick;
- a paused or deleted schedule fires nothing and passes over what is due.

Either way the cursor then moves to the last tick due, so nothing is considered twice.
A late tick is never dropped silently: it fires late (its invocation's `scheduled_for`
is the tick, so the lateness shows), or it is logged as missed under `skip`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta

from runtime.scheduling.definition import ScheduleDefinition
from runtime.store.views import rfc3339


@dataclasses.dataclass(frozen=True)
class TickPlan:
    """What to do for one schedule now."""

    #: Ticks to fire, oldest first.
    fire: tuple[datetime, ...] = ()
    #: The last tick due; the cursor moves here once `fire` is done. None: nothing due.
    advance_to: datetime | None = None
    #: Why due ticks were passed over: `paused`, `deleted`, `missed`; None if none were.
    passed_over: str | None = None
    #: The latest tick that was missed (fired late under `run_once`, dropped under `skip`).
    missed_until: datetime | None = None


def plan_ticks(
    definition: ScheduleDefinition,
    *,
    cursor: datetime,
    paused: bool,
    deleted: bool,
    now: datetime,
) -> TickPlan:
    """Decide which of the ticks in `(cursor, now]` fire now."""
    times = definition.times
    last_due = times.latest(cursor, now)
    if last_due is None:
        return TickPlan()
    if deleted or paused:
        return TickPlan(advance_to=last_due, passed_over="deleted" if deleted else "paused")
    missed_before = now - timedelta(seconds=definition.misfire_grace_s)
    on_time = times.between(max(cursor, missed_before), now)
    missed = times.latest(cursor, missed_before) if cursor < missed_before else None
    fire = list(on_time)
    if missed is not None and definition.misfire == "run_once":
        fire.insert(0, missed)
    return TickPlan(
        fire=tuple(fire),
        advance_to=last_due,
        passed_over="missed" if missed is not None else None,
        missed_until=missed,
    )


def tick_key(schedule_id: str, tick: datetime) -> str:
    """The idempotency key of a tick: one invocation per tenant, however many schedulers."""
    return f"schedule:{schedule_id}:{rfc3339(tick)}"


def manual_key(schedule_id: str, token: str) -> str:
    """The idempotency key of a manual trigger; long client tokens are hashed to fit."""
    key = f"schedule:{schedule_id}:manual:{token}"
    if len(key) <= 255:
        return key
    return f"schedule:{schedule_id}:manual:#{hashlib.sha256(token.encode()).hexdigest()}"


def jitter(definition: ScheduleDefinition, tick: datetime, tenant_id: str) -> timedelta:
    """A delay in `[0, jitter_s)`, the same in every scheduler for one tick and tenant."""
    if not definition.jitter_s:
        return timedelta(0)
    seed = f"{definition.id}|{rfc3339(tick)}|{tenant_id}".encode()
    fraction = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") / 2**64
    return timedelta(milliseconds=int(definition.jitter_s * 1000 * fraction))
