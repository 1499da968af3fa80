"""Assemble a Ferry runtime from settings: store, registry, broker, services, workers."""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
import structlog
from dramatiq.common import q_name

from runtime.broker import build_broker, declare_actors, install_worker_middleware
from runtime.dispatch import Dispatcher
from runtime.errors import BrokerUnavailable
from runtime.execution import Executor
from runtime.heartbeat import Heartbeat, HeartbeatOptions
from runtime.metrics import process_metrics
from runtime.registry import Registry
from runtime.scheduling.scheduler import Scheduler
from runtime.services.invocations import InvocationService, new_invocation_id
from runtime.services.schedules import ScheduleService
from runtime.services.tenants import TenantService
from runtime.settings import Settings
from runtime.store import Clock, Store, utcnow

log = structlog.get_logger("ferry.runtime")


class Sweeper:
    """Runs `Dispatcher.sweep` every `interval_s` in a thread until stopped."""

    def __init__(self, dispatcher: Dispatcher, interval_s: float) -> None:
        self.dispatcher = dispatcher
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ferry-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatcher.sweep()
            except Exception as ex:  # keep sweeping; the next round may succeed
                log.warning("sweep_failed", error_type=type(ex).__name__, error=str(ex))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


@dataclasses.dataclass
class WorkerHandle:
    """A running Dramatiq worker and its sweeper."""

    worker: dramatiq.Worker
    sweeper: Sweeper | None
    heartbeat: Heartbeat | None = None

    def stop(self, grace_s: float) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stopping()
        if self.sweeper is not None:
            self.sweeper.stop()
        # Dramatiq stops consuming, lets running messages finish within the timeout and
        # requeues what it had prefetched.
        self.worker.stop(timeout=int(grace_s * 1000))
        if self.heartbeat is not None:
            self.heartbeat.stop()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self.worker_id = worker_id()
        self.metrics = process_metrics(settings)
        install_worker_middleware(
            self.broker, self.store.claims, self.worker_id, self._lease_s, self.metrics
        )
        # Built in the order they need each other; the dispatcher finds each function's
        # actor on the broker, so the actors can come last.
        self.dispatcher = Dispatcher(
            self.store, self.broker, redispatch_after_s=settings.redispatch_after_s
        )
        self.invocations = InvocationService(
            self.store,
            self.registry,
            self.dispatcher,
            id_factory=id_factory or new_invocation_id,
        )
        self.tenants = TenantService(self.store, auth_cache_s=settings.auth_cache_s)
        self.executor = Executor(self.store, self.invocations, secret_key=settings.secret_key)
        self.actors = declare_actors(self.broker, self.registry, self.executor.actor_body)
        # Periodiq and Dramatiq's CLI look the broker up globally.
        dramatiq.set_broker(self.broker)

    @functools.cached_property
    def schedules(self) -> ScheduleService:
        """The schedules of `FERRY_SCHEDULES_MODULE`, loaded and checked on first use."""
        return ScheduleService(Scheduler.from_runtime(self))

    def _lease_s(self, function_name: str) -> float:
        timeout = (
            self.registry.get(function_name).timeout
            if function_name in self.registry
            else self.settings.default_timeout_s
        )
        return timeout + self.settings.lease_grace_s

    def start_worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        threads: int | None = None,
        sweep: bool = True,
    ) -> WorkerHandle:
        """Start consuming in this process (threads), with the dispatcher's sweep."""
        self.broker.emit_after("process_boot")
        worker = dramatiq.Worker(
            self.broker,
            queues=set(queues) if queues else None,
            worker_threads=threads or self.settings.worker_threads,
            worker_timeout=self.settings.worker_poll_ms,
        )
        worker.start()
        sweeper = Sweeper(self.dispatcher, self.settings.sweep_interval_s) if sweep else None
        if sweeper is not None:
            sweeper.start()
        heartbeat = Heartbeat(
            self.store.workers,
            self.worker_id,
            queues=sorted(queues or {q_name(q) for q in self.broker.get_declared_queues()}),
            threads=threads or self.settings.worker_threads,
            options=HeartbeatOptions.from_settings(self.settings),
            metrics=self.metrics,
        )
        heartbeat.start()
        return WorkerHandle(worker, sweeper, heartbeat)

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
        self.broker.close()
        self.store.close()
