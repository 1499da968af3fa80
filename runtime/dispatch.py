"""From "accepted" to "sent to the broker": sending, and the sweep that sends again.

`runtime.services.invocations` accepts an invocation (HTTP, the CLI, schedules and
`ctx.invoke`) and hands it to `Dispatcher.dispatch`; the sweep calls `Dispatcher.sweep`.
Both end in `Dispatcher.send`, so tenant-fair dispatch (limits, round-robin across
tenants) can be added here without touching the callers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import redis
import structlog

from runtime.errors import BrokerUnavailable, Unavailable
from runtime.queues import queue_depths
from runtime.store import Store
from runtime.store.sweep import Dispatch

log = structlog.get_logger("ferry.dispatch")

#: An invocation's `dispatched_at` is stamped just before its message is built, so the
#: message at a queue's head was sent a little after its own `dispatched_at`. Only what
#: was dispatched this long before the head counts as ahead of it (lost); a lost message
#: nearer the head waits until the head moves on.
ENQUEUE_SLACK = timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class SweepReport:
    lost: int
    sent: int
    failed_sends: int


class Dispatcher:
    """Sends invocations to the broker: each accepted one at once, and the sweep's."""

    def __init__(self, store: Store, broker: dramatiq.Broker, *, redispatch_after_s: float) -> None:
        self.store = store
        self.broker = broker
        self.redispatch_after_s = redispatch_after_s

    @property
    def actors(self) -> Mapping[str, dramatiq.Actor[Any, Any]]:
        """The broker's actors by name: one per function once they are declared."""
        return self.broker.actors

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

    def dispatch(self, item: Dispatch) -> bool:
        """Send a committed invocation now, or leave it to the sweep; True if it was sent.

        The invocation is accepted already, so a broker that does not answer changes
        nothing for the caller: the invocation is marked unsent and the next sweep sends it.
        """
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
