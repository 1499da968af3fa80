"""From "accepted" to "sent to the broker": the one place a message is built and sent.

`runtime.services.invocations` accepts an invocation (HTTP, the CLI, schedules and
`ctx.invoke`) and hands it to `Dispatcher.dispatch`; the sweep (`runtime.recovery`) calls
`Dispatcher.send`; the claim middleware calls `Dispatcher.after_claim` and
`Dispatcher.after_finish`.

Fair dispatch (docs/fairness.md): a tenant has at most `DispatchPolicy.window` invocations
sent and not yet started; the rest wait in the store, held, and are released as the
tenant's own invocations start or finish, so each release goes to the tail of the broker's
queue, behind the other tenants' waiting work: round-robin across tenants, weighted by
the window's size. The concurrency limits themselves are enforced by the claim
(`runtime.store.claims`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dramatiq
import redis
import structlog

from runtime.errors import BrokerUnavailable, Unavailable
from runtime.settings import DEFAULT_FAIR_WINDOW
from runtime.store import Store
from runtime.store.claims import Limits
from runtime.store.fairness import WaitReason
from runtime.store.sweep import Dispatch, FairWindows

log = structlog.get_logger("ferry.dispatch")


@dataclasses.dataclass(frozen=True)
class TenantShare:
    """What fair dispatch needs of a tenant: its weight, and its concurrency (None: no limit)."""

    weight: int = 1
    concurrency: int | None = None


@dataclasses.dataclass(frozen=True)
class FunctionShare:
    """A function's own limits per tenant: running at once, and per concurrency key."""

    concurrency: int | None = None
    per_key: int | None = None


def _no_limits_of_tenant(_tenant_id: str) -> TenantShare:
    return TenantShare()


class DispatchPolicy:
    """The windows and limits of each tenant and function (read from where they are stored).

    `tenant_share` is called per dispatch and claim: it should be cached (the limits'
    service caches each tenant's for a few seconds).
    """

    def __init__(
        self,
        *,
        fair: bool = True,
        window: int = DEFAULT_FAIR_WINDOW,
        tenant_share: Callable[[str], TenantShare] = _no_limits_of_tenant,
        functions: Mapping[str, FunctionShare] | None = None,
        default_weight: int = 1,
        default_concurrency: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("the fair window must be at least 1")
        self.fair = fair
        self.base_window = window
        self.tenant_share = tenant_share
        self.functions = {name: f for name, f in (functions or {}).items() if f != FunctionShare()}
        #: The sweep's windows: the same, read in SQL from each tenant's row.
        self.sweep_windows = FairWindows(window, default_weight, default_concurrency or 0)

    def window(self, tenant_id: str) -> int:
        """Invocations the tenant may have sent and not yet started: the base times its weight,
        and no more than its concurrency limit."""
        share = self.tenant_share(tenant_id)
        window = self.base_window * max(1, share.weight)
        if share.concurrency is not None:
            window = min(window, share.concurrency)
        return max(1, window)

    def limits(self, tenant_id: str, function: str) -> Limits:
        """The limits a claim of this tenant's `function` must respect."""
        own = self.functions.get(function, FunctionShare())
        return Limits(self.tenant_share(tenant_id).concurrency, own.concurrency, own.per_key)

    def tenant_is_limited(self, tenant_id: str) -> bool:
        """Whether any limit can hold this tenant's work (its own, or a function's)."""
        return bool(self.functions) or self.tenant_share(tenant_id).concurrency is not None


#: A window of w is refilled after every (w // this)-th claim (see `Dispatcher.after_claim`).
RELEASE_BATCH_DIVISOR = 4


class Dispatcher:
    """Sends invocations to the broker: each accepted one at once, and the sweep's."""

    def __init__(
        self, store: Store, broker: dramatiq.Broker, policy: DispatchPolicy | None = None
    ) -> None:
        self.store = store
        self.broker = broker
        self.policy = policy or DispatchPolicy()
        self._lock = threading.Lock()
        #: Claims per tenant since this process last released for it (`after_claim`).
        self._claims_since_release: dict[str, int] = {}

    @property
    def actors(self) -> Mapping[str, dramatiq.Actor[Any, Any]]:
        """The broker's actors by name: one per function once they are declared."""
        return self.broker.actors

    @property
    def fair_windows(self) -> FairWindows | None:
        """The sweep's windows; None when fair dispatch is off."""
        return self.policy.sweep_windows if self.policy.fair else None

    def send(self, item: Dispatch) -> None:
        """Hand one invocation to the broker; the message carries ids, never the input."""
        message = self._message(item)
        try:
            self.broker.enqueue(message)
        except (redis.RedisError, OSError) as ex:
            raise BrokerUnavailable(f"the broker is unreachable: {type(ex).__name__}") from ex

    def accept_window(self, tenant_id: str) -> int | None:
        """The window a new invocation of the tenant is admitted under; None: fairness off.

        The accept's own INSERT compares it with the tenant's sent invocations
        (`Invocations.insert`), so admitting costs no statement of its own.
        """
        return self.policy.window(tenant_id) if self.policy.fair else None

    def send_accepted(self, item: Dispatch) -> bool:
        """Send an invocation the accept stored as sent; True if the broker took it.

        The invocation is accepted already, so a broker that does not answer changes
        nothing for the caller: it is marked unsent and the next sweep sends it.
        """
        return self._send_or_leave(item)

    def _message(self, item: Dispatch) -> dramatiq.Message[Any]:
        return self.actors[item.function].message_with_options(
            args=(item.id,), tenant_id=item.tenant_id, invocation_id=item.id
        )

    def send_many(self, items: Sequence[Dispatch]) -> list[Dispatch]:
        """Hand many invocations (of any tenants and functions) to the broker at once.

        On Redis in one pipelined round trip (`WakingRedisBroker.enqueue_many`); other
        brokers get them one by one. Returns those not sent: a broker that does not answer
        fails them all. Each not sent is marked unsent, as `dispatch` does for one, so the
        sweep sends it; they are accepted already, so this is never the caller's error.
        """
        sendable, failed = self._sendable(items)
        try:
            self._enqueue_all(sendable)
        except BrokerUnavailable as ex:
            log.warning("send_many_deferred_to_sweep", count=len(sendable), error=str(ex))
            failed.extend(sendable)
        if failed:
            try:
                self.store.batches.mark_unsent([item.id for item in failed])
            except Unavailable:
                # The sweep still sends them, once `redispatch_after_s` has passed.
                log.warning("mark_unsent_failed", count=len(failed))
        return failed

    def dispatch(self, item: Dispatch) -> bool:
        """Send a committed invocation now, hold it for its turn, or leave it to the sweep.

        True if it was sent. With fair dispatch, an invocation whose tenant's window is
        full is held (`fair_share`) and sent when a place frees. The invocation is
        accepted already, so a broker that does not answer changes nothing for the
        caller: the invocation is marked unsent and the next sweep sends it.
        """
        if self.policy.fair and not self.store.fairness.admit(
            item.id, item.tenant_id, self.policy.window(item.tenant_id)
        ):
            return False
        return self._send_or_leave(item)

    def _send_or_leave(self, item: Dispatch) -> bool:
        try:
            self.send(item)
            return True
        except BrokerUnavailable:
            log.warning("send_deferred_to_sweep", invocation_id=item.id, tenant_id=item.tenant_id)
        try:
            self.store.invocations.mark_unsent(item.id)
        except Unavailable:
            # The sweep still sends it, once `redispatch_after_s` has passed.
            log.warning("mark_unsent_failed", invocation_id=item.id)
        return False

    # --- releasing held work ------------------------------------------------------------------

    def after_claim(self, tenant_id: str) -> int:
        """A tenant's invocation started: its window has a free place; send what it admits.

        A window of w releases after every (w // 4)-th claim of the tenant in this process,
        each time up to all its free places: one statement refills many places, and the
        broker still holds most of a window (a window of 64: at least 48 per process).
        """
        if not self.policy.fair:
            return 0
        every = max(1, self.policy.window(tenant_id) // RELEASE_BATCH_DIVISOR)
        if every > 1:
            with self._lock:
                claims = self._claims_since_release.get(tenant_id, 0) + 1
                due = claims >= every
                self._claims_since_release[tenant_id] = 0 if due else claims
            if not due:
                return 0
        return self.release(tenant_id)

    def after_finish(self, tenant_id: str, function: str) -> int:
        """An attempt under a limit ended: a running place is free; send what it admits."""
        if (
            function not in self.policy.functions
            and not self.policy.tenant_share(tenant_id).concurrency
        ):
            return 0
        return self.release(tenant_id)

    def release(self, tenant_id: str) -> int:
        """Send the tenant's oldest held invocations that its window and limits admit now.

        Candidates of a function or key at its limit are passed over, and nothing is
        sent while the tenant runs as many as its own limit: so a busy key never holds
        up the tenant's other work. Returns how many were sent.
        """
        cap: int | None = None
        blocked_functions: list[str] = []
        blocked_keys: list[tuple[str, str]] = []
        if self.policy.tenant_is_limited(tenant_id):
            running = self.store.fairness.running(tenant_id)
            concurrency = self.policy.tenant_share(tenant_id).concurrency
            if concurrency is not None:
                cap = concurrency - running.total
            for name, count in running.by_function.items():
                own = self.policy.functions.get(name)
                if own is not None and own.concurrency is not None and count >= own.concurrency:
                    blocked_functions.append(name)
            for (name, key), count in running.by_key.items():
                own = self.policy.functions.get(name)
                if own is not None and own.per_key is not None and count >= own.per_key:
                    blocked_keys.append((name, key))
        released = self.store.fairness.release(
            tenant_id,
            window=self.policy.window(tenant_id),
            cap=cap,
            blocked_functions=blocked_functions,
            blocked_keys=blocked_keys,
        )
        known, _unknown = self._sendable(released)
        try:
            self._enqueue_all(known)
        except BrokerUnavailable:
            # Held again: a later release or the sweep sends them. Those the broker took
            # before it failed are delivered too; their claim or a duplicate's skip decides.
            for item in known:
                self.store.fairness.hold(item.id, WaitReason.FAIR_SHARE)
            return 0
        return len(known)

    def _sendable(self, items: Sequence[Dispatch]) -> tuple[list[Dispatch], list[Dispatch]]:
        """The items whose function has an actor here, and the others (logged)."""
        known: list[Dispatch] = []
        unknown: list[Dispatch] = []
        for item in items:
            if item.function in self.actors:
                known.append(item)
            else:
                log.error(
                    "dispatch_unknown_function", invocation_id=item.id, function=item.function
                )
                unknown.append(item)
        return known, unknown

    def _enqueue_all(self, items: Sequence[Dispatch]) -> None:
        """Hand several invocations to the broker: one round trip on Redis when it can.

        Raises `BrokerUnavailable` if the broker failed; some may have been sent.
        """
        enqueue_many = getattr(self.broker, "enqueue_many", None)
        if enqueue_many is None or len(items) < 2:
            for item in items:
                self.send(item)
            return
        messages = [self._message(item) for item in items]
        try:
            enqueue_many(messages)
        except (redis.RedisError, OSError) as ex:
            raise BrokerUnavailable(f"the broker is unreachable: {type(ex).__name__}") from ex
