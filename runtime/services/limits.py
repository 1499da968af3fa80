"""Per-tenant limits: read and set them, count a tenant's work, and refuse accepts over them.

A tenant's limits are its own values where it has them and the deployment's
`FERRY_DEFAULT_*` elsewhere (`runtime.store.limits`); the defaults limit nothing. A
function may declare its own (`@function(concurrency=..., max_waiting=...,
concurrency_key=...)`, `runtime.function_limits`), which hold beside the tenant's.

At accept (`check_accept`), for requests of clients (`http` and `cli` triggers):

1. `max_waiting`: the tenant's waiting invocations (queued + scheduled + retrying), and
   the function's if it declares its own, counted up to the limit; at the limit, refused.
2. `rate_per_s`: one token of the tenant's bucket (one atomic statement in the store,
   shared by every gateway process); none left, refused with the time until the next.

Refused is `LimitExceeded` (429, `Retry-After`) before anything is stored. A replay of an
idempotency key already stored is never refused: it stores nothing. Work Ferry makes
itself is never refused: a schedule's tick (refusing it would lose the tick, and the
next one comes anyway) and a child of `ctx.invoke` (refusing it would fail a parent that
was accepted already). Both count as waiting, so they can take a tenant over
`max_waiting`: its clients' accepts are then refused until the backlog drains. When they
run is up to the concurrency limits, which fair dispatch enforces at claim time.

The waiting check is not a lock: accepts racing at the limit can each see one free
place, so a tenant can go over `max_waiting` by about the number of accepts in flight.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import NoReturn

from runtime.errors import LimitExceeded
from runtime.function_limits import FunctionLimits
from runtime.registry import Function
from runtime.services.audit import SYSTEM, Actor
from runtime.store import Store
from runtime.store.limits import (
    COLUMNS,
    WAITING_REASONS,
    Counts,
    EffectiveLimits,
    LimitDefaults,
    TenantLimits,
)

__all__ = [
    "COLUMNS",
    "WAITING_REASONS",
    "Counts",
    "EffectiveLimits",
    "FunctionLimits",
    "LimitDefaults",
    "LimitService",
    "TenantLimitsReport",
]

#: Triggers whose accepts limits may refuse: requests of clients.
LIMITED_TRIGGERS = ("http", "cli")
#: `Retry-After` of a refusal for waiting work: about when some of it may have run.
WAITING_RETRY_AFTER_S = 5.0


@dataclasses.dataclass(frozen=True)
class TenantLimitsReport:
    """A tenant's own limits, the limits that hold, and its work now."""

    tenant_id: str
    own: TenantLimits
    effective: EffectiveLimits
    counts: Counts

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "own": self.own.as_dict(),
            "effective": self.effective.as_dict(),
            "waiting": self.counts.waiting,
            "running": self.counts.running,
        }


class LimitService:
    """Tenants' limits for the CLI, the API, the dashboard, metrics and the accept path."""

    def __init__(
        self,
        store: Store,
        defaults: LimitDefaults,
        *,
        cache_s: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.defaults = defaults
        self.cache_s = cache_s
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        #: Called with (tenant_id, limit) for every refused accept (metrics).
        self.on_refused = on_refused
        self._cache: dict[str, tuple[float, EffectiveLimits]] = {}
        self._lock = threading.Lock()

    # --- reading and setting ------------------------------------------------------------------

    def own(self, tenant_id: str) -> TenantLimits:
        """The tenant's own limits (None: the default); `TenantNotFound` if there is none."""
        return self.store.limits.get(tenant_id)

    def effective(self, tenant_id: str) -> EffectiveLimits:
        """The limits that hold for the tenant, remembered for `cache_s` seconds."""
        now = self.monotonic()
        with self._lock:
            cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        limits = self.defaults.for_tenant(self.store.limits.get(tenant_id))
        if self.cache_s > 0:
            with self._lock:
                self._cache[tenant_id] = (now + self.cache_s, limits)
        return limits

    def effective_many(self, tenant_ids: list[str] | None = None) -> dict[str, EffectiveLimits]:
        """The limits that hold for each tenant named (None: every tenant); one statement."""
        return {
            tenant_id: self.defaults.for_tenant(own)
            for tenant_id, own in self.store.limits.many(tenant_ids).items()
        }

    def customised(self) -> dict[str, EffectiveLimits]:
        """The limits that hold for each tenant that set one of its own."""
        return {
            tenant_id: self.defaults.for_tenant(own)
            for tenant_id, own in self.store.limits.customised().items()
        }

    def default_limits(self) -> EffectiveLimits:
        """The limits of a tenant that sets none of its own."""
        return self.defaults.for_tenant(TenantLimits())

    def set(
        self,
        tenant_id: str,
        values: Mapping[str, float | int | None],
        *,
        actor: Actor = SYSTEM,
    ) -> TenantLimits:
        """Set the limits named; None returns one to the default, the others keep theirs.

        Names are `rate_per_s`, `burst`, `concurrency`, `max_waiting`, `weight`. This
        process applies them at once, others within `cache_s`. Audited:
        `tenant.set_limits`, with the values set.
        """
        audit = actor.entry(
            "tenant.set_limits", tenant_id=tenant_id, target=tenant_id, detail=dict(values)
        )
        own = self.store.limits.set(tenant_id, values, audit=audit)
        with self._lock:
            self._cache.pop(tenant_id, None)
        return own

    def reset(self, tenant_id: str, *, actor: Actor = SYSTEM) -> TenantLimits:
        """Return every limit of the tenant to the deployment's default."""
        return self.set(tenant_id, dict.fromkeys(COLUMNS), actor=actor)

    def counts(self, tenant_id: str) -> Counts:
        """The tenant's waiting and running invocations now."""
        return self.store.limits.counts(tenant_id)

    def counts_by_tenant(self) -> dict[str, Counts]:
        """Waiting and running invocations of each tenant that has any."""
        return self.store.limits.counts_by_tenant()

    def report(self, tenant_id: str) -> TenantLimitsReport:
        """Own and effective limits and counts of one tenant, as shown to operators."""
        own = self.own(tenant_id)
        return TenantLimitsReport(
            tenant_id, own, self.defaults.for_tenant(own), self.counts(tenant_id)
        )

    def busiest(self, count: int = 20) -> list[TenantLimitsReport]:
        """The `count` tenants with the most work in flight, most first, with their limits."""
        counts = self.counts_by_tenant()
        top = sorted(counts, key=lambda t: (-(counts[t].waiting + counts[t].running), t))[:count]
        own = self.store.limits.many(top)
        return [
            TenantLimitsReport(t, own[t], self.defaults.for_tenant(own[t]), counts[t])
            for t in top
            if t in own
        ]

    # --- the accept path ----------------------------------------------------------------------

    def check_accept(
        self,
        tenant_id: str,
        fn: Function,
        *,
        trigger: str,
        idempotency_key: str | None,
    ) -> None:
        """Refuse (`LimitExceeded`) an accept over the tenant's or the function's limits.

        Checks nothing for Ferry's own triggers, nor for a replay of a stored key; when
        no limit is set, costs no statement (the limits are remembered for `cache_s`).
        """

        def count_new() -> int:
            # A replay of a stored key adds nothing, so no limit refuses it.
            if idempotency_key is not None and self.store.invocations.find_by_key(
                tenant_id, fn.name, idempotency_key
            ):
                return 0
            return 1

        self.check_accept_batch(tenant_id, fn, trigger=trigger, count_new=count_new)

    def check_accept_batch(
        self, tenant_id: str, fn: Function, *, trigger: str, count_new: Callable[[], int]
    ) -> None:
        """`check_accept` for a batch: refuse it whole, or let all of it through.

        `count_new` says how many of the batch's invocations would be new (not replays);
        it is called only when a limit applies. Refused if they would take the tenant (or
        the function) over its `max_waiting`, or if its bucket lacks a token for each.
        """
        if trigger not in LIMITED_TRIGGERS:
            return
        limits = self.effective(tenant_id)
        function_waiting = fn.limits.max_waiting
        if not (limits.max_waiting or function_waiting or limits.rate_per_s):
            return
        new = count_new()
        if new <= 0:
            return
        if limits.max_waiting:
            self._check_waiting(tenant_id, None, limits.max_waiting, adding=new)
        if function_waiting:
            self._check_waiting(tenant_id, fn.name, function_waiting, adding=new)
        if limits.rate_per_s:
            wait_s = self.store.limits.take_tokens(
                tenant_id,
                new,
                rate_per_s=limits.rate_per_s,
                burst=limits.burst,
                now_s=self.wall_clock(),
            )
            if wait_s == math.inf:
                self._refuse(
                    tenant_id,
                    "rate_per_s",
                    f"a batch of {new} new invocations is more than tenant {tenant_id!r}'s "
                    f"burst of {limits.burst}: send batches of at most {limits.burst}",
                    WAITING_RETRY_AFTER_S,
                )
            if wait_s > 0:
                self._refuse(
                    tenant_id,
                    "rate_per_s",
                    f"tenant {tenant_id!r} is over its accept rate of {limits.rate_per_s:g} "
                    f"per second (burst {limits.burst})"
                    + (f" for a batch of {new} new invocations" if new > 1 else ""),
                    wait_s,
                )

    def _check_waiting(
        self, tenant_id: str, function: str | None, limit: int, *, adding: int = 1
    ) -> None:
        waiting = self.store.limits.count_waiting(tenant_id, function=function, cap=limit)
        if waiting + adding <= limit:
            return
        if function is None:
            self._refuse(
                tenant_id,
                "max_waiting",
                f"tenant {tenant_id!r} has {limit} invocations waiting, its max_waiting",
                WAITING_RETRY_AFTER_S,
            )
        self._refuse(
            tenant_id,
            "function.max_waiting",
            f"tenant {tenant_id!r} has {limit} invocations of {function} waiting, "
            "the function's max_waiting",
            WAITING_RETRY_AFTER_S,
        )

    def _refuse(self, tenant_id: str, limit: str, message: str, retry_after_s: float) -> NoReturn:
        if self.on_refused is not None:
            self.on_refused(tenant_id, limit)
        raise LimitExceeded(message, limit=limit, retry_after_s=retry_after_s)
