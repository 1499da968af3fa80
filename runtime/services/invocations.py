"""Invocations' use cases, once for the API, the dashboard, the CLI, schedules and `ctx.invoke`.

Accepting commits the invocation in the store first; from then on it is accepted,
whatever the broker does: a failed send leaves it to the sweep (`Dispatcher.dispatch`).
Every read and action takes the tenant it acts for; another tenant's invocation is
reported exactly like a missing one. `None` as the tenant is an operator acting across
tenants.
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from runtime.callbacks.urls import callback_url_problem
from runtime.context import CHILD_KEY_PREFIX
from runtime.dispatch import Dispatcher
from runtime.errors import (
    BadRequest,
    InvalidState,
    NotFound,
    TenantSuspended,
    Unavailable,
)
from runtime.registry import Registry
from runtime.services import batches
from runtime.services.audit import SYSTEM, Actor
from runtime.services.batches import BatchItem, ItemOutcome
from runtime.services.invocation_values import (
    IDEMPOTENCY_KEY_RULE,
    Accepted,
    BulkRetry,
    InvocationPage,
    InvocationWithAttempts,
    key_is_well_formed,
    new_invocation,
    new_invocation_id,
)
from runtime.services.limits import LimitService
from runtime.services.secrets import require_secrets
from runtime.services.waits import WaitSlots
from runtime.settings import (
    DEFAULT_GATEWAY_THREADS,
    DEFAULT_MAX_DELAY_S,
    DEFAULT_MAX_WAITS_PER_TENANT,
)
from runtime.store import Store
from runtime.store.models import Status
from runtime.store.sweep import Dispatch
from runtime.store.views import InvocationView

log = structlog.get_logger("ferry.invocations")

TRIGGERS = ("http", "schedule", "invoke", "cli")
#: Triggers whose idempotency key a client chose.
CLIENT_TRIGGERS = ("http", "cli")
#: Idempotency keys Ferry makes itself start with one of these: a schedule's ticks and
#: manual triggers (`schedule:{id}:...`, the contract's format) and `ctx.invoke`'s children.
#: A client's key may not, so no client can claim one of them first.
SYSTEM_KEY_PREFIXES = ("schedule:", CHILD_KEY_PREFIX)
#: The largest page a listing returns.
MAX_PAGE = 200
#: Invocations one bulk retry may name; more are left out.
MAX_BULK_RETRY = 200


class InvocationService:
    """Accept, wait for, read, cancel and retry invocations."""

    #: How often `wait` looks at the store: the first interval, doubling up to the last.
    POLL_FIRST_S = 0.02
    POLL_MAX_S = 0.25

    def __init__(
        self,
        store: Store,
        registry: Registry,
        dispatcher: Dispatcher,
        *,
        id_factory: Callable[[], str] = new_invocation_id,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        wait_slots: WaitSlots | None = None,
        limits: LimitService | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.dispatcher = dispatcher
        self.id_factory = id_factory
        self.sleep = sleep
        self.monotonic = monotonic
        #: The furthest ahead `accept` puts an invocation (`FERRY_MAX_DELAY_S`).
        self.max_delay_s = max_delay_s
        #: Waits held at once in this process (`FERRY_MAX_WAITS_PER_*`).
        self.wait_slots = wait_slots or WaitSlots(
            per_tenant=DEFAULT_MAX_WAITS_PER_TENANT, per_process=DEFAULT_GATEWAY_THREADS // 2
        )
        #: Tenants' limits, checked before a client's invocation is stored (None: no limits).
        self.limits = limits

    # --- accepting ----------------------------------------------------------------------------

    def accept(
        self,
        *,
        tenant_id: str,
        function: str,
        payload: Any,
        idempotency_key: str | None = None,
        trigger: str = "http",
        request_id: str | None = None,
        parent_id: str | None = None,
        at: datetime | None = None,
        delay_s: float | None = None,
        callback_url: str | None = None,
        key_id: str | None = None,
    ) -> Accepted:
        """Validate, store and (if due) send an invocation; or return the stored one.

        `at` or `delay_s` (not both) runs it later, at most `max_delay_s` ahead. The same idempotency key and input
        from the same tenant give back the invocation stored first (a replay); another
        input under that key raises `IdempotencyConflict`. Over a limit of the tenant or
        the function, `LimitExceeded` and nothing stored (`LimitService.check_accept`).
        Once this returns, the invocation is committed; a broker that does not answer
        leaves it to the sweep. `callback_url` gets the finished invocation
        (docs/callbacks.md). `key_id`: the caller's API key, which the store checks is
        still active in the same statement that stores the invocation (`Unauthenticated`
        if not), so a gateway may have authenticated the caller from memory.
        """
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}; got {trigger!r}")
        if (
            trigger in CLIENT_TRIGGERS
            and idempotency_key is not None
            and not key_is_well_formed(idempotency_key)
        ):
            raise BadRequest(f"an Idempotency-Key must be {IDEMPOTENCY_KEY_RULE}")
        if trigger in CLIENT_TRIGGERS and (idempotency_key or "").startswith(SYSTEM_KEY_PREFIXES):
            raise BadRequest(
                "an Idempotency-Key may not start with "
                f"{' or '.join(repr(p) for p in SYSTEM_KEY_PREFIXES)}: Ferry makes those itself"
            )
        if callback_url is not None and (problem := callback_url_problem(callback_url)):
            raise BadRequest(problem)
        scheduled_for = self._due_at(at, delay_s)
        fn = self.registry.get(function)
        row = new_invocation(
            fn,
            self.id_factory(),
            tenant_id=tenant_id,
            payload=payload,
            idempotency_key=idempotency_key,
            trigger=trigger,
            request_id=request_id,
            parent_id=parent_id,
            scheduled_for=scheduled_for,
            callback_url=callback_url,
        )
        # Before anything is stored: a function whose secrets are not set could only fail.
        require_secrets(self.store, tenant_id, fn.spec.secrets)
        if self.limits is not None:
            # After validation (a bad input takes no token), before anything is stored.
            self.limits.check_accept(
                tenant_id, fn, trigger=trigger, idempotency_key=idempotency_key
            )
        invocation, created = self.store.invocations.insert(
            row, window=self.dispatcher.accept_window(tenant_id), key_id=key_id
        )
        if created and invocation.status == Status.QUEUED and invocation.waiting_reason is None:
            self.dispatcher.send_accepted(_dispatch_of(invocation))
        if created:
            log.info(
                "invocation_accepted",
                **invocation.log_context(),
                trigger=trigger,
                status=invocation.status,
            )
        return Accepted(invocation, created)

    def accept_batch(
        self,
        *,
        tenant_id: str,
        function: str,
        items: Sequence[BatchItem],
        trigger: str = "http",
        request_id: str | None = None,
        at: datetime | None = None,
        delay_s: float | None = None,
        callback_url: str | None = None,
    ) -> builtins.list[ItemOutcome]:
        """Accept up to 1,000 inputs of one function at once (`runtime.services.batches`).

        One outcome per item, in order: its invocation (new or a replay) or its own 422
        errors. Over a limit, `LimitExceeded` and nothing stored.
        """
        return batches.accept_batch(
            self,
            tenant_id=tenant_id,
            function=function,
            items=items,
            trigger=trigger,
            request_id=request_id,
            at=at,
            delay_s=delay_s,
            callback_url=callback_url,
        )

    def _due_at(self, at: datetime | None, delay_s: float | None) -> datetime | None:
        """When to run: `at`, or `delay_s` from now; None for now. No later than the max."""
        if at is not None and delay_s is not None:
            raise BadRequest("give delay or at, not both")
        if at is not None:
            if at.tzinfo is None:
                raise BadRequest("at must carry its UTC offset")
            if at - self.store.db.clock() > timedelta(seconds=self.max_delay_s):
                raise self._too_far("at")
            return at
        if delay_s is None:
            return None
        if not math.isfinite(delay_s) or delay_s < 0:
            raise BadRequest(f"delay must be a number of seconds, 0 or more; got {delay_s!r}")
        if delay_s > self.max_delay_s:
            raise self._too_far("delay")
        return self.store.db.clock() + timedelta(seconds=delay_s)

    def _too_far(self, name: str) -> BadRequest:
        return BadRequest(
            f"{name} may put a run at most {self.max_delay_s:g} seconds "
            f"({_duration(self.max_delay_s)}, FERRY_MAX_DELAY_S) ahead"
        )

    def wait(self, invocation: InvocationView, timeout_s: float) -> InvocationView:
        """Poll the store until the invocation finishes or `timeout_s` runs out.

        Returns the last state seen. A store that stops answering ends the wait early
        with that state: the invocation is accepted already, so this is not an error.
        So does a tenant (or this process) holding all its wait slots (`wait_slots`): then
        it returns at once, and the caller answers as for a wait that ran out.
        """
        if invocation.finished or timeout_s <= 0:
            return invocation
        with self.wait_slots.hold(invocation.tenant_id) as held:
            if not held:
                log.info("wait_declined", **invocation.log_context(), reason="no_wait_slot")
                return invocation
            return self._poll(invocation, timeout_s)

    def _poll(self, invocation: InvocationView, timeout_s: float) -> InvocationView:
        deadline = self.monotonic() + timeout_s
        interval = self.POLL_FIRST_S
        while not invocation.finished:
            left = deadline - self.monotonic()
            if left <= 0:
                break
            self.sleep(min(interval, left))
            interval = min(interval * 2, self.POLL_MAX_S)
            try:
                invocation = self.store.invocations.get(invocation.id, invocation.tenant_id)
            except Unavailable:
                log.warning("wait_store_unavailable", **invocation.log_context())
                break
        return invocation

    # --- reading ------------------------------------------------------------------------------

    def get(self, invocation_id: str, tenant_id: str | None) -> InvocationWithAttempts:
        """One invocation with its attempt log."""
        invocation = self.store.invocations.get(invocation_id, tenant_id)
        attempts = self.store.invocations.attempts(invocation.id)
        callback = self.store.callbacks.get(invocation.id)
        return InvocationWithAttempts(invocation, tuple(attempts), callback)

    def list(
        self,
        tenant_id: str | None,
        *,
        function: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: datetime | None = None,
    ) -> InvocationPage:
        """Invocations newest first, in pages of `limit`; `cursor` continues a listing.

        `since` keeps those created at or after it.
        """
        if status is not None and status not in set(Status):
            raise BadRequest(f"status must be one of {', '.join(Status)}; got {status!r}")
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}; got {limit}")
        views, next_cursor = self.store.invocations.list(
            tenant_id,
            function=function,
            status=status,
            created_from=since,
            limit=limit,
            cursor=cursor,
        )
        return InvocationPage(views, next_cursor)

    # --- operator actions ---------------------------------------------------------------------
    # Each is recorded in the audit trail with its `actor`, in the transaction of the change.

    def cancel(
        self, invocation_id: str, tenant_id: str | None, *, actor: Actor = SYSTEM
    ) -> InvocationView:
        """Cancel an invocation that is not running yet (`InvalidState` otherwise)."""
        owner = tenant_id or self.store.invocations.get(invocation_id).tenant_id
        audit = actor.entry("invocation.cancel", tenant_id=owner, target=invocation_id)
        return self.store.invocations.cancel(invocation_id, tenant_id, audit=audit)

    def retry(
        self, invocation_id: str, tenant_id: str | None, *, actor: Actor = SYSTEM
    ) -> InvocationView:
        """Queue a failed or cancelled invocation again, with a fresh retry budget.

        Another tenant's invocation is not found before anything else is said about it;
        then a suspended tenant runs nothing new. `None` acts for the invocation's tenant.
        """
        return self._retry(invocation_id, tenant_id, actor, bulk=False)

    def _retry(
        self, invocation_id: str, tenant_id: str | None, actor: Actor, *, bulk: bool
    ) -> InvocationView:
        owner = self.store.invocations.get(invocation_id, tenant_id).tenant_id
        if not self.store.tenants.get(owner).active:
            raise TenantSuspended(f"tenant {owner!r} is suspended")
        audit = actor.entry(
            "invocation.retry",
            tenant_id=owner,
            target=invocation_id,
            detail={"bulk": True} if bulk else None,
        )
        invocation = self.store.invocations.requeue(invocation_id, owner, audit=audit)
        self.dispatcher.dispatch(_dispatch_of(invocation))
        log.info("invocation_requeued", **invocation.log_context())
        return invocation

    def retry_failed(
        self, invocation_ids: Iterable[str], tenant_id: str | None, *, actor: Actor = SYSTEM
    ) -> BulkRetry:
        """Retry each named invocation that is failed now; skip the others.

        Each id is tried once, in order, up to `MAX_BULK_RETRY` of them. Each one retried
        is one `invocation.retry` record (detail `{"bulk": true}`); a skipped one, none.
        """
        retried: builtins.list[InvocationView] = []
        skipped: builtins.list[str] = []
        for invocation_id in builtins.list(dict.fromkeys(invocation_ids))[:MAX_BULK_RETRY]:
            try:
                current = self.store.invocations.get(invocation_id, tenant_id)
                if current.status != Status.FAILED:
                    raise InvalidState(f"invocation is {current.status}, not failed")
                retried.append(self._retry(invocation_id, tenant_id, actor, bulk=True))
            except (NotFound, InvalidState, TenantSuspended):
                skipped.append(invocation_id)
        return BulkRetry(tuple(retried), tuple(skipped))


def _duration(seconds: float) -> str:
    """Seconds in the largest whole unit that fits: "30 days", "2 h", "90 s"."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _dispatch_of(invocation: InvocationView) -> Dispatch:
    return Dispatch(invocation.id, invocation.tenant_id, invocation.function, invocation.queue)
