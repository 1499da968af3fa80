"""From "accepted" to "sent to the broker": the one path every invocation takes.

HTTP, the CLI, schedules and `ctx.invoke` all call `Dispatcher.accept`; the sweep calls
`Dispatcher.sweep`. Both end in `Dispatcher.send`, so tenant-fair dispatch (limits,
round-robin across tenants) can be added here without touching the callers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import redis
import structlog

from runtime.errors import BrokerUnavailable, TenantSuspended
from runtime.queues import queue_depths
from runtime.registry import Registry
from runtime.store import Store
from runtime.store.invocations import NewInvocation
from runtime.store.sweep import Dispatch
from runtime.store.views import InvocationView

log = structlog.get_logger("ferry.dispatch")

TRIGGERS = ("http", "schedule", "invoke", "cli")
#: An invocation's `dispatched_at` is stamped just before its message is built, so the
#: message at a queue's head was sent a little after its own `dispatched_at`. Only what
#: was dispatched this long before the head counts as ahead of it (lost); a lost message
#: nearer the head waits until the head moves on.
ENQUEUE_SLACK = timedelta(seconds=1)


def request_hash(payload: Mapping[str, Any]) -> str:
    """Hash of the canonical JSON of an input: equal inputs, equal hashes."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class SweepReport:
    lost: int
    sent: int
    failed_sends: int


class Dispatcher:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        broker: dramatiq.Broker,
        actors: Mapping[str, dramatiq.Actor[Any, Any]],
        *,
        redispatch_after_s: float,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.store = store
        self.registry = registry
        self.broker = broker
        self.actors = actors
        self.redispatch_after_s = redispatch_after_s
        self.id_factory = id_factory

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
        scheduled_for: datetime | None = None,
    ) -> tuple[InvocationView, bool]:
        """Validate, store and (if due) send an invocation; or return the stored one.

        Returns the invocation and whether this call created it. When this returns, the
        invocation is committed in the store; if the broker refused it, it is withdrawn
        and `BrokerUnavailable` raised, so nothing half-accepted remains.
        """
        fn = self.registry.get(function)
        data = fn.validate_input(payload).model_dump(mode="json")
        new_id = self.id_factory()
        invocation, created = self.store.invocations.insert(
            NewInvocation(
                id=new_id,
                tenant_id=tenant_id,
                function=fn.name,
                queue=fn.queue,
                trigger=trigger,
                idempotency_key=idempotency_key or new_id,
                request_hash=request_hash(data),
                request_id=request_id,
                parent_id=parent_id,
                payload=data,
                max_retries=fn.max_retries,
                scheduled_for=scheduled_for,
            )
        )
        if created and invocation.status == "queued":
            try:
                self.send(Dispatch(invocation.id, tenant_id, fn.name, fn.queue))
            except BrokerUnavailable:
                self.store.invocations.withdraw(invocation.id)
                raise
        if created:
            log.info(
                "invocation_accepted",
                **invocation.log_context(),
                trigger=trigger,
                status=invocation.status,
            )
        return invocation, created

    def send(self, item: Dispatch) -> None:
        """Hand one invocation to the broker; the message carries ids, never the input."""
        actor = self.actors[item.function]
        message = actor.message_with_options(
            args=(item.id,), tenant_id=item.tenant_id, invocation_id=item.id
        )
        try:
            self.broker.enqueue(message)
        except (redis.RedisError, OSError) as ex:
            raise BrokerUnavailable(f"the broker is unreachable: {type(ex).__name__}") from ex

    def requeue(self, invocation_id: str, tenant_id: str | None) -> InvocationView:
        """Queue a failed or cancelled invocation again (an operator's retry)."""
        owner = self.store.invocations.get(invocation_id, tenant_id).tenant_id
        if not self.store.tenants.get(owner).active:
            raise TenantSuspended(f"tenant {owner!r} is suspended")
        invocation = self.store.invocations.requeue(invocation_id, tenant_id)
        # If the send fails the invocation stays queued and the sweep sends it later.
        try:
            self.send(
                Dispatch(invocation.id, invocation.tenant_id, invocation.function, invocation.queue)
            )
        except BrokerUnavailable:
            log.warning("requeue_send_deferred", invocation_id=invocation.id)
        return invocation

    def sweep(self) -> SweepReport:
        """Recover lost attempts, then send everything due or stale."""
        lost = self.store.sweep.reclaim_lost()
        for invocation_id in lost:
            log.warning("attempt_lost", invocation_id=invocation_id)
        sent = failed = 0
        batch = self.store.sweep.take_dispatchable(
            redispatch_after_s=self.redispatch_after_s, waiting_since=self._waiting_since()
        )
        for item in batch:
            if item.function not in self.actors:
                log.error(
                    "dispatch_unknown_function", invocation_id=item.id, function=item.function
                )
                failed += 1
                continue
            try:
                self.send(item)
                sent += 1
            except BrokerUnavailable:
                # Marked as sent; it is sent again once `redispatch_after_s` passes.
                failed += 1
        if failed:
            log.warning("dispatch_failed", count=failed)
        return SweepReport(lost=len(lost), sent=sent, failed_sends=failed)

    def _waiting_since(self) -> dict[str, datetime | None]:
        """When each queue's oldest waiting message was enqueued (None: queue empty).

        A backlog older than `redispatch_after_s` is not lost work; without this the sweep
        would send all of it again. If the broker cannot say, every queue falls back to
        `redispatch_after_s` alone.
        """
        try:
            depths = queue_depths(self.broker)
        except (redis.RedisError, OSError) as ex:
            log.warning("queue_depths_unavailable", error_type=type(ex).__name__)
            return {}
        return {
            d.queue: None
            if d.oldest_enqueued_at is None
            else datetime.fromtimestamp(d.oldest_enqueued_at, UTC) - ENQUEUE_SLACK
            for d in depths
        }
