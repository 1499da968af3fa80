"""Assemble a Ferry runtime from settings: store, registry, broker, services, workers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
import structlog

from runtime.callbacks.delivery import CallbackDelivery
from runtime.dispatch import Dispatcher, DispatchPolicy, FunctionShare, TenantShare
from runtime.errors import BrokerUnavailable, StoreUnavailable, TenantNotFound
from runtime.metrics import process_metrics
from runtime.outbound import OutboundClient, OutboundPolicy
from runtime.recovery.leases import LeaseKeeper, LeaseOptions, timeouts
from runtime.recovery.retention import RetentionSweep
from runtime.recovery.sweeper import Sweep
from runtime.registry import Registry
from runtime.scheduling.scheduler import Scheduler
from runtime.secrets import SecretBox
from runtime.services.audit import AuditTrail
from runtime.services.invocation_values import new_invocation_id
from runtime.services.invocations import InvocationService
from runtime.services.limits import LimitService
from runtime.services.schedules import ScheduleService
from runtime.services.secrets import SecretService
from runtime.services.tenants import TenantService
from runtime.services.waits import WaitSlots
from runtime.settings import Settings
from runtime.store import Clock, Store, utcnow
from runtime.store.limits import LimitDefaults
from runtime.worker.broker import build_broker, declare_actors, install_worker_middleware
from runtime.worker.consumer import WorkerHandle, new_worker_id, start_consuming
from runtime.worker.execution import Executor

log = structlog.get_logger("ferry.runtime")


def dispatch_policy(settings: Settings, registry: Registry, limits: LimitService) -> DispatchPolicy:
    """Fair dispatch as the settings say, with the tenants' and the functions' limits."""

    def tenant_share(tenant_id: str) -> TenantShare:
        try:
            effective = limits.effective(tenant_id)
        except TenantNotFound:
            return TenantShare()
        return TenantShare(effective.weight, effective.concurrency or None)

    functions = {
        fn.name: FunctionShare(
            fn.limits.concurrency,
            fn.limits.concurrency_per_key if fn.limits.concurrency_key else None,
        )
        for fn in registry
    }
    return DispatchPolicy(
        fair=settings.fair_dispatch,
        window=settings.fair_window,
        tenant_share=tenant_share,
        functions=functions,
        default_weight=settings.default_weight,
        default_concurrency=settings.default_concurrency or None,
    )


class Runtime:
    """Everything one Ferry process needs, built from one `Settings`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        id_factory: Callable[[], str] | None = None,
        broker: dramatiq.Broker | None = None,
    ) -> None:
        self.settings = settings
        self.store = Store.from_settings(settings, clock)
        self.registry = Registry.load(settings.functions_module, settings)
        self.broker = broker if broker is not None else build_broker(settings)
        self.worker_id = new_worker_id()
        self.metrics = process_metrics(settings)
        self.leases = LeaseKeeper(
            self.store.leases,
            self.worker_id,
            timeout_s=timeouts(self.registry, settings),
            options=LeaseOptions.from_settings(settings),
            metrics=self.metrics,
        )
        # Built in the order they need each other; the dispatcher finds each function's
        # actor on the broker, so the actors can come last.
        self.limits = LimitService(
            self.store,
            LimitDefaults.from_settings(settings),
            cache_s=settings.limits_cache_s,
            on_refused=self.metrics.limit_refused,
        )
        self.dispatcher = Dispatcher(
            self.store, self.broker, dispatch_policy(settings, self.registry, self.limits)
        )
        install_worker_middleware(
            self.broker,
            self.store.claims,
            self.worker_id,
            self.leases,
            self.metrics,
            self.dispatcher,
        )
        self.secrets = SecretService(
            self.store,
            SecretBox.from_settings(settings),
            webhook_grace_s=settings.webhook_secret_grace_s,
        )
        outbound = OutboundPolicy.from_settings(settings)
        self.callbacks = CallbackDelivery(self.store, self.secrets, OutboundClient(outbound))
        self.sweep = Sweep(
            self.store,
            self.dispatcher,
            self.broker,
            redispatch_after_s=settings.redispatch_after_s,
            retention=RetentionSweep.from_settings(self.store, settings),
            callbacks=self.callbacks.start_round,
        )
        self.invocations = InvocationService(
            self.store,
            self.registry,
            self.dispatcher,
            id_factory=id_factory or new_invocation_id,
            max_delay_s=settings.max_delay_s,
            wait_slots=WaitSlots(
                per_tenant=settings.max_waits_per_tenant, per_process=settings.waits_per_process
            ),
            limits=self.limits,
        )
        self.tenants = TenantService(self.store, auth_cache_s=settings.auth_cache_s)
        self.audit = AuditTrail(self.store)
        self.executor = Executor(
            self.store,
            self.invocations,
            secrets=self.secrets,
            outbound=outbound,
        )
        self.actors = declare_actors(self.broker, self.registry, self.executor.actor_body)
        # Periodiq and Dramatiq's CLI look the broker up globally.
        dramatiq.set_broker(self.broker)

    @functools.cached_property
    def schedules(self) -> ScheduleService:
        """The schedules of `FERRY_SCHEDULES_MODULE`, loaded and checked on first use."""
        return ScheduleService(Scheduler.from_runtime(self))

    def start_worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        threads: int | None = None,
        sweep: bool = True,
    ) -> WorkerHandle:
        """Start consuming in this process (threads), with the sweep unless told not to."""
        self._warn_unscoped_sessions()
        return start_consuming(
            self.broker,
            self.settings,
            worker_id=self.worker_id,
            workers=self.store.workers,
            leases=self.leases,
            metrics=self.metrics,
            sweep=self.sweep if sweep else None,
            queues=queues,
            threads=threads,
            claims=self.store.claims,
        )

    def _warn_unscoped_sessions(self) -> None:
        # Functions' sessions are refused until the set-up is done: say so once, at start.
        try:
            gaps = self.store.db.tenant_scope_gaps()
        except StoreUnavailable:
            return
        if gaps:
            log.error(
                "tenant_scope_not_set_up",
                missing=[gap.problem for gap in gaps],
                fix="`ferry migrate` prints the SQL that sets it up (docs/tenancy.md)",
            )

    def readiness(self) -> dict[str, str]:
        """`ok` or what failed, for the store and the broker."""
        checks: dict[str, str] = {}
        try:
            self.store.db.ping()
            checks["store"] = "ok"
        except Exception as ex:
            checks["store"] = f"unavailable: {type(ex).__name__}"
        try:
            self.ping_broker()
            checks["broker"] = "ok"
        except Exception as ex:
            checks["broker"] = f"unavailable: {type(ex).__name__}"
        return checks

    def ping_broker(self) -> None:
        client: Any = getattr(self.broker, "client", None)
        if client is None:
            return  # the in-process broker lives as long as this process
        try:
            client.ping()
        except Exception as ex:
            raise BrokerUnavailable(f"the broker is unreachable: {type(ex).__name__}") from ex

    def close(self) -> None:
        self.callbacks.join(timeout_s=10)
        self.callbacks.client.close()
        self.broker.close()
        self.store.close()
