"""Build the Dramatiq broker, fix its middleware order, and declare one actor per function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, ShutdownNotifications

from runtime.dispatch import Dispatcher
from runtime.metrics import Metrics
from runtime.recovery.leases import LeaseKeeper
from runtime.registry import Registry
from runtime.settings import Settings
from runtime.store.claims import Claims
from runtime.worker.middleware.claim import ClaimMiddleware
from runtime.worker.middleware.logging import LogContextMiddleware
from runtime.worker.middleware.metrics import MetricsMiddleware
from runtime.worker.redis_broker import WakingRedisBroker


def build_broker(settings: Settings) -> dramatiq.Broker:
    """The in-process broker (embedded mode) or Redis, with Dramatiq's own middleware.

    Dramatiq's `Retries` and `AgeLimit` are left out on purpose: retries are rows in the
    store (see `runtime.worker.execution`), and nothing accepted may age out of the broker.
    So is its `TimeLimit`, which covers the whole message, recording included: the
    executor puts the function's timeout around the handler alone
    (`runtime.worker.time_limit`).
    """
    base: list[dramatiq.Middleware] = [
        ShutdownNotifications(),
        CurrentMessage(),
    ]
    if settings.embedded_broker:
        return StubBroker(middleware=base)
    broker_class = WakingRedisBroker if settings.redis_consumer_wakeup else RedisBroker
    return broker_class(
        url=settings.broker_url,
        namespace=settings.redis_namespace,
        middleware=base,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=10,
    )


def install_worker_middleware(
    broker: dramatiq.Broker,
    claims: Claims,
    worker_id: str,
    leases: LeaseKeeper,
    metrics: Metrics,
    dispatcher: Dispatcher | None = None,
) -> None:
    """Ferry's middleware, in the one order that works: claim, log binding, metrics.

    The claim must run first: every later hook relies on the invocation it won.
    """
    broker.add_middleware(ClaimMiddleware(claims, worker_id, leases, dispatcher))
    broker.add_middleware(LogContextMiddleware())
    # After the claim: it measures the attempts the claim won.
    broker.add_middleware(MetricsMiddleware(metrics, claims))


def declare_actors(
    broker: dramatiq.Broker,
    registry: Registry,
    body: Callable[[Any], Callable[[str], None]],
) -> dict[str, dramatiq.Actor[Any, Any]]:
    """One Dramatiq actor per function, on its function's queue."""
    actors: dict[str, dramatiq.Actor[Any, Any]] = {}
    for function in registry:
        actors[function.name] = dramatiq.Actor(
            body(function),
            broker=broker,
            actor_name=function.name,
            queue_name=function.queue,
            priority=0,
            options={},
        )
    for queue in ("default", "heavy", "scheduled"):
        broker.declare_queue(queue)
    return actors
