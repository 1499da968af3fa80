"""`GET /metrics` (Prometheus text format) and the gateway's HTTP request metrics.

`/metrics` needs no API key: bind it privately (a reverse proxy that does not forward
it, or a network policy). See `runtime.metrics` for multi-process mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import falcon
import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.limits_metrics import TenantLimitsCollector
from runtime.metrics import (
    Metrics,
    StateCollector,
    exposition,
    multiprocess_dir,
    process_metrics,
    scrape_registry,
)
from runtime.recovery.heartbeat import HeartbeatOptions

log = structlog.get_logger("ferry.gateway")

#: The route label of a request no route matched (scanners must not add series).
UNMATCHED = "unmatched"
#: The method label's values: the methods of RFC 9110 and PATCH; any other is `OTHER_METHOD`.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
)
OTHER_METHOD = "other"


def method_label(method: str) -> str:
    """The request method as a label from a closed set: made-up methods add no series."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


class MetricsResource:
    """GET /metrics: this host's counters plus queue and worker figures read now."""

    public = True

    def __init__(
        self,
        state: StateCollector,
        *,
        base: CollectorRegistry = REGISTRY,
        multiprocess_path: str | None = None,
        extra: Sequence[Collector] = (),
    ) -> None:
        self.state = state
        #: More figures read at scrape time (the tenants' limits and counts).
        self.extra = tuple(extra)
        self.base = base
        self.multiprocess_path = multiprocess_path

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        registry = scrape_registry(
            [self.state, *self.extra], base=self.base, multiprocess_path=self.multiprocess_path
        )
        body, content_type = exposition(registry, req.get_header("Accept"))
        resp.data = body
        resp.content_type = content_type
        resp.cache_control = ["no-store"]


class HttpMetricsMiddleware:
    """Count every answer by route template and status, and time it.

    Every label comes from a closed set: the route is Falcon's matched template
    (`/v1/invocations/{invocation_id}`), never the raw path, so ids do not become series;
    the method is one of `KNOWN_METHODS` or `other`. Place it first in the app's
    middleware to time everything the others do too.
    """

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self.metrics = metrics
        self.clock = clock

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started_at = self.clock()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        try:
            route = req.uri_template or UNMATCHED
            method = method_label(req.method)
            self.metrics.http_requests.labels(
                method=method, route=route, status=str(resp.status_code)
            ).inc()
            started = req.context.get("metrics_started_at")
            if started is not None:
                self.metrics.http_duration.labels(method=method, route=route).observe(
                    self.clock() - started
                )
        except Exception as ex:  # an answer must never fail because of its metrics
            self.metrics.record_errors.labels(where="gateway").inc()
            log.error("metrics_record_failed", error_type=type(ex).__name__, error=str(ex))


def state_collector(runtime: Runtime) -> StateCollector:
    return StateCollector(
        runtime.broker,
        runtime.store.workers,
        stale_after_s=HeartbeatOptions.from_settings(runtime.settings).stale_after_s,
    )


def add_metrics_route(app: WsgiApp, runtime: Runtime) -> None:
    """Mount `/metrics` alone (when `HttpMetricsMiddleware` is placed by hand)."""
    app.add_route(
        "/metrics",
        MetricsResource(
            state_collector(runtime),
            multiprocess_path=multiprocess_dir(),
            extra=[TenantLimitsCollector(runtime.limits)],
        ),
    )


def add_metrics(app: WsgiApp, runtime: Runtime) -> None:
    """Mount `/metrics` and count the app's requests (the middleware goes last)."""
    app.add_middleware(HttpMetricsMiddleware(process_metrics(runtime.settings)))
    add_metrics_route(app, runtime)
