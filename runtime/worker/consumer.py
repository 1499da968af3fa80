"""Start a process's worker threads, with its sweep and its heartbeat, and stop them."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Sequence

import dramatiq
from dramatiq.common import q_name

from runtime.metrics import Metrics
from runtime.recovery.heartbeat import Heartbeat, HeartbeatOptions
from runtime.recovery.sweeper import Sweep, SweepThread
from runtime.settings import Settings
from runtime.store.workers import Workers


def new_worker_id() -> str:
    """This process's id in the `workers` table and on its claims: host, pid, a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass
class WorkerHandle:
    """A running Dramatiq worker, its sweep and its heartbeat."""

    worker: dramatiq.Worker
    sweeper: SweepThread | None
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


def start_consuming(
    broker: dramatiq.Broker,
    settings: Settings,
    *,
    worker_id: str,
    workers: Workers,
    metrics: Metrics,
    sweep: Sweep | None,
    queues: Sequence[str] | None = None,
    threads: int | None = None,
) -> WorkerHandle:
    """Consume `queues` (default: all) on `threads` threads, sweeping if given a sweep."""
    broker.emit_after("process_boot")
    threads = threads or settings.worker_threads
    worker = dramatiq.Worker(
        broker,
        queues=set(queues) if queues else None,
        worker_threads=threads,
        worker_timeout=settings.worker_poll_ms,
    )
    worker.start()
    sweeper = (
        SweepThread(sweep, settings.sweep_interval_s, metrics=metrics)
        if sweep is not None
        else None
    )
    if sweeper is not None:
        sweeper.start()
    heartbeat = Heartbeat(
        workers,
        worker_id,
        queues=sorted(queues or {q_name(q) for q in broker.get_declared_queues()}),
        threads=threads,
        options=HeartbeatOptions.from_settings(settings),
        metrics=metrics,
    )
    heartbeat.start()
    return WorkerHandle(worker, sweeper, heartbeat)
