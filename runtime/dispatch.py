"""From "accepted" to "sent to the broker": the one place a message is built and sent.

`runtime.services.invocations` accepts an invocation (HTTP, the CLI, schedules and
`ctx.invoke`) and hands it to `Dispatcher.dispatch`; the sweep (`runtime.recovery`) calls
`Dispatcher.send`. Tenant-fair dispatch can be added here without touching the callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dramatiq
import redis
import structlog

from runtime.errors import BrokerUnavailable, Unavailable
from runtime.store import Store
from runtime.store.sweep import Dispatch

log = structlog.get_logger("ferry.dispatch")


class Dispatcher:
    """Sends invocations to the broker: each accepted one at once, and the sweep's."""

    def __init__(self, store: Store, broker: dramatiq.Broker) -> None:
        self.store = store
        self.broker = broker

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
