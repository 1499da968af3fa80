"""Prometheus metrics of every Ferry process, whole across gunicorn and worker processes.

Two kinds of figures:

- **Counted where they happen** (`Metrics`): attempts, invocations finished, retries and
  run time in worker processes (`runtime.worker.middleware.metrics`), HTTP requests and latency
  in gateway processes (`gateway.metrics`), worker starts and losses (`runtime.recovery.heartbeat`),
  sweeps (`runtime.recovery.sweeper`).
- **Read at scrape time** (`StateCollector`): queue lengths and the age of each queue's
  oldest message from the broker, workers by state from the store. Both are shared by
  all processes, so any gateway process answers with the whole picture; with several
  gateway replicas, aggregate these with `max`, not `sum`.

Multi-process mode. Gunicorn runs several web processes and `ferry worker` runs apart
from them, so each process's counters must be summed. prometheus-client does that when
every process writes into one directory; `FERRY_METRICS_DIR` names it, and
`runtime.metrics_dir` creates it, wipes it when a new group of processes starts and
exports it as prometheus-client's `PROMETHEUS_MULTIPROC_DIR` before the first metric is
built (`process_metrics`). `/metrics` of a web process, or `ferry worker --metrics-port`,
then reports the sum over the directory; `mark_process_dead(pid)` drops an exited
process's live gauges (gunicorn's `child_exit` hook, the worker at exit).
docs/operations.md says which endpoint Prometheus scrapes in each layout.

Without a directory each process counts for itself (fine for `ferry dev` and tests).
The tenant is a label only when `FERRY_METRICS_TENANT_LABEL` is on: one series per
tenant and function can be a lot.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

import dramatiq
import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.registry import Collector

from runtime.errors import ConfigurationError
from runtime.metrics_dir import MULTIPROC_ENV, leave_metrics_dir, use_metrics_dir
from runtime.settings import Settings
from runtime.store.workers import DISPLAY_STATES, Workers, WorkerView
from runtime.worker.queues import QueueDepth, queue_depths

log = structlog.get_logger("ferry.metrics")

#: Attempt run times: from a fast webhook to a `heavy` job near its timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: Gateway answers: mostly milliseconds; `?wait=` holds a request up to 30 s.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def multiprocess_dir() -> str | None:
    """The shared metrics directory, if this process runs in multi-process mode."""
    # prometheus-client reads the variable itself when the first metric is built; reading
    # it here too keeps the scrape side in step with how the counters were stored.
    return os.environ.get(MULTIPROC_ENV) or None


def tenant_label_enabled(settings: Settings) -> bool:
    """`FERRY_METRICS_TENANT_LABEL`: label invocation metrics with the tenant."""
    return settings.metrics_tenant_label


class Metrics:
    """The metric objects a process records into; one instance per process (`process_metrics`)."""

    def __init__(self, *, tenant_label: bool = False, registry: CollectorRegistry = REGISTRY):
        self.tenant_label = tenant_label
        by_function = ["function", "tenant"] if tenant_label else ["function"]
        self.invocations = Counter(
            "ferry_invocations",
            "Invocations finished by a worker, by function and final status.",
            [*by_function, "status"],
            registry=registry,
        )
        self.attempts = Counter(
            "ferry_attempts",
            "Attempts run, by function and outcome (succeeded, retrying, failed, timed_out).",
            [*by_function, "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "ferry_retries",
            "Attempts that failed and left their invocation to be retried.",
            by_function,
            registry=registry,
        )
        self.duration = Histogram(
            "ferry_invocation_duration_seconds",
            "Run time of one attempt, from claim to recorded outcome.",
            by_function,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "ferry_attempts_in_progress",
            "Attempts running now.",
            ["function"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.http_requests = Counter(
            "ferry_http_requests",
            "HTTP requests answered by the gateway, by route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "ferry_http_request_duration_seconds",
            "Gateway latency, from the request reaching Ferry to the answer.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.worker_starts = Counter(
            "ferry_worker_starts", "Worker processes started.", registry=registry
        )
        self.workers_lost = Counter(
            "ferry_workers_lost",
            "Workers that stopped beating without a clean exit (killed, crashed, hung).",
            registry=registry,
        )
        self.record_errors = Counter(
            "ferry_metrics_record_errors",
            "Times recording a metric failed (the figures above are then short).",
            ["where"],
            registry=registry,
        )
        # Labelled by tenant whatever FERRY_METRICS_TENANT_LABEL says: a series exists only
        # for a tenant that was refused (see runtime/limits_metrics.py for the gauges).
        self.limit_refusals = Counter(
            "ferry_limit_refusals",
            "Accepts refused by a tenant's limit, by tenant and limit (429).",
            ["tenant", "limit"],
            registry=registry,
        )
        self._registry = registry
        self._sweep: SweepMetrics | None = None
        self._sweep_lock = threading.Lock()

    def sweep(self) -> SweepMetrics:
        """The sweep's figures, built when a sweep first needs them (see `SweepMetrics`)."""
        with self._sweep_lock:
            if self._sweep is None:
                self._sweep = SweepMetrics(self._registry)
            return self._sweep

    def _labels(self, function: str, tenant_id: str) -> dict[str, str]:
        if self.tenant_label:
            return {"function": function, "tenant": tenant_id}
        return {"function": function}

    def observe_run(self, *, function: str, tenant_id: str, duration_s: float) -> None:
        """Record how long one attempt ran."""
        self.duration.labels(**self._labels(function, tenant_id)).observe(duration_s)

    def limit_refused(self, tenant_id: str, limit: str) -> None:
        """Count one accept refused by `limit` of the tenant."""
        self.limit_refusals.labels(tenant=tenant_id, limit=limit).inc()

    def count_outcome(
        self, *, function: str, tenant_id: str, outcome: str | None, status: str | None
    ) -> None:
        """Count one finished attempt; `status` is its invocation's status afterwards."""
        labels = self._labels(function, tenant_id)
        if outcome:
            self.attempts.labels(**labels, outcome=outcome).inc()
        if status == "retrying":
            self.retries.labels(**labels).inc()
        elif status in ("succeeded", "failed"):
            self.invocations.labels(**labels, status=status).inc()


class SweepMetrics:
    """How the sweep (`runtime.recovery.sweeper.SweepThread`) fares in this process.

    Built only in processes that sweep: a web process would otherwise report a last
    success of 0, "never", beside the workers' figures.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        # The newest of the host's processes counts (`max`): one sweeper is enough, and an
        # exited process's older timestamp cannot hide a newer one.
        self.last_success = Gauge(
            "ferry_sweep_last_success_timestamp_seconds",
            "Unix time the last sweep completed (the newest of this host's processes).",
            multiprocess_mode="max",
            registry=registry,
        )
        self.failures = Counter(
            "ferry_sweep_failures",
            "Sweeps that failed (each logged as sweep_failed, with its traceback).",
            registry=registry,
        )


_process_metrics: Metrics | None = None
_process_lock = threading.Lock()


def process_metrics(settings: Any) -> Metrics:
    """This process's metrics, built on first use; every caller shares them."""
    global _process_metrics
    tenant_label = tenant_label_enabled(settings)
    with _process_lock:
        if _process_metrics is None:
            # Into the shared directory, if one is set, before the first value is stored.
            use_metrics_dir(settings)
            _process_metrics = Metrics(tenant_label=tenant_label)
        elif _process_metrics.tenant_label != tenant_label:
            raise ConfigurationError(
                "FERRY_METRICS_TENANT_LABEL differs between runtimes of one process"
            )
        return _process_metrics


# --- read at scrape time ----------------------------------------------------------------------


class StateCollector(Collector):
    """Figures read from the broker and the store when Prometheus scrapes.

    A source that does not answer is reported by `ferry_scrape_source_up{source}` = 0 and
    its figures are left out, rather than failing the whole scrape.
    """

    def __init__(
        self,
        broker: dramatiq.Broker,
        workers: Workers,
        *,
        stale_after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.workers = workers
        #: When a silent worker counts as stale (`HeartbeatOptions.stale_after_s`).
        self.stale_after_s = stale_after_s
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        depths: list[QueueDepth] | None = None
        workers: list[WorkerView] | None = None
        try:
            depths = queue_depths(self.broker)
        except Exception as ex:
            log.warning("metrics_source_failed", source="broker", error_type=type(ex).__name__)
        try:
            workers = self.workers.list()
        except Exception as ex:
            log.warning("metrics_source_failed", source="store", error_type=type(ex).__name__)
        if depths is not None:
            yield from self._queue_families(depths)
        if workers is not None:
            queues = [d.queue for d in depths or []]
            yield from self._worker_families(workers, self.workers.db.clock(), queues)
        up = GaugeMetricFamily(
            "ferry_scrape_source_up",
            "1 if the source answered this scrape, else 0.",
            labels=["source"],
        )
        up.add_metric(["broker"], 0.0 if depths is None else 1.0)
        up.add_metric(["store"], 0.0 if workers is None else 1.0)
        yield up

    def _queue_families(self, depths: list[QueueDepth]) -> Iterator[Metric]:
        now = self.clock()
        length = GaugeMetricFamily(
            "ferry_queue_length", "Messages waiting in the broker, by queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "ferry_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting in the broker, by queue (0 when empty).",
            labels=["queue"],
        )
        for depth in depths:
            length.add_metric([depth.queue], float(depth.length))
            age.add_metric([depth.queue], depth.oldest_age_s(now))
        yield length
        yield age

    def _worker_families(
        self, views: list[WorkerView], now: datetime, queues: list[str]
    ) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "ferry_workers",
            "Worker processes by state: live, stopping, stale (silent, not yet marked), "
            "lost, stopped (ended ones are kept a while).",
            labels=["state"],
        )
        counts = dict.fromkeys(DISPLAY_STATES, 0)
        per_queue = dict.fromkeys(queues, 0)
        for view in views:
            state = view.display_state(now, self.stale_after_s)
            counts[state] += 1
            if state == "live":
                for queue in view.queues:
                    per_queue[queue] = per_queue.get(queue, 0) + 1
        for state, count in counts.items():
            by_state.add_metric([state], float(count))
        yield by_state
        consumers = GaugeMetricFamily(
            "ferry_queue_workers", "Live workers consuming each queue.", labels=["queue"]
        )
        for queue, count in sorted(per_queue.items()):
            consumers.add_metric([queue], float(count))
        yield consumers


class _Registered(Collector):
    """Everything registered in one registry, as a collector of another."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def scrape_registry(
    extra: Sequence[Collector] = (),
    *,
    base: CollectorRegistry = REGISTRY,
    multiprocess_path: str | None = None,
) -> CollectorRegistry:
    """A registry for one scrape: every process's counters (or this one's), plus `extra`."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_path:
        prometheus_multiprocess.MultiProcessCollector(registry, path=multiprocess_path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Registered(base))
    for collector in extra:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for; the body and its content type."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


def mark_process_dead(pid: int) -> None:
    """Drop an exited process's live gauges (a no-op outside multi-process mode)."""
    leave_metrics_dir(pid)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve this process's counters, or its directory's sum, on `port` from a thread.

    For a worker host, pod or container without a web process (`ferry worker
    --metrics-port`). Stop it with `shutdown()` and `server_close()`.
    """
    try:
        server, _thread = start_http_server(
            port, addr=addr, registry=scrape_registry(multiprocess_path=multiprocess_dir())
        )
    except OSError as ex:
        raise ConfigurationError(f"metrics port {port}: {ex.strerror or ex}") from ex
    log.info("metrics_serving", port=port, addr=addr, multiprocess_dir=multiprocess_dir())
    return server
