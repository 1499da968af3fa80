"""Start a process's worker threads, with its sweep and its heartbeat, and stop them."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import uuid
from collections.abc import Sequence

import dramatiq
from dramatiq.common import q_name

from runtime.metrics import Metrics
from runtime.recovery.heartbeat import Heartbeat, HeartbeatOptions
from runtime.recovery.leases import LeaseKeeper
from runtime.recovery.sweeper import Sweep, SweepThread
from runtime.settings import Settings
from runtime.store.claims import Claims
from runtime.store.workers import Workers


def new_worker_id() -> str:
    """This process's id in the `workers` table and on its claims: host, pid, a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass
class WorkerHandle:
    """A running Dramatiq worker, its sweep, its heartbeat and its lease keeper."""

    worker: dramatiq.Worker
    sweeper: SweepThread | None
    heartbeat: Heartbeat | None = None
    leases: LeaseKeeper | None = None
    #: How long an idle worker thread takes to notice it should stop (its poll).
    poll_s: float = 0.1
    #: Its successes still waiting for their batch are written before leases are released.
    claims: Claims | None = None

    def stop(self, grace_s: float) -> int:
        """Drain within `grace_s`; how many threads still ran an attempt (given up).

        Their claims are released, so the next sweep of any other process runs them again.
        """
        if self.heartbeat is not None:
            self.heartbeat.stopping()
        if self.sweeper is not None:
            self.sweeper.stop()
        # Dramatiq stops consuming, lets running messages finish within the timeout and
        # requeues what it had prefetched. Leases are renewed meanwhile.
        self.worker.stop(timeout=int(grace_s * 1000))
        busy = self._busy_threads()
        if self.claims is not None:
            self.claims.close()
        if self.leases is not None:
            self.leases.stop()
            self.leases.release_all()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        return busy

    def _busy_threads(self) -> int:
        # An idle thread leaves within one poll; one still alive after that runs an attempt.
        deadline = time.monotonic() + 2 * self.poll_s
        for thread in self.worker.workers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return sum(1 for thread in self.worker.workers if thread.is_alive())


def start_consuming(
    broker: dramatiq.Broker,
    settings: Settings,
    *,
    worker_id: str,
    workers: Workers,
    leases: LeaseKeeper | None = None,
    metrics: Metrics,
    sweep: Sweep | None,
    queues: Sequence[str] | None = None,
    threads: int | None = None,
    claims: Claims | None = None,
) -> WorkerHandle:
    """Consume `queues` (default: all) on `threads` threads, sweeping if given a sweep.

    With `leases`, the leases of the attempts this process runs are renewed.
    """
    broker.emit_after("process_boot")
    threads = threads or settings.worker_threads
    worker = dramatiq.Worker(
        broker,
        queues=set(queues) if queues else None,
        worker_threads=threads,
        worker_timeout=settings.worker_poll_ms,
    )
    worker.start()
    if leases is not None:
        leases.start()
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
    return WorkerHandle(
        worker, sweeper, heartbeat, leases, settings.worker_poll_ms / 1000, claims=claims
    )
