"""The app factory: each resource is built with the services it uses, taken from a `Runtime`."""

from __future__ import annotations

import functools
import importlib
from typing import Protocol, cast

import falcon

from gateway import errors, openapi
from gateway.dashboard import add_dashboard_routes
from gateway.metrics import HttpMetricsMiddleware, add_metrics_route
from gateway.middleware import AccessLogMiddleware, AuthMiddleware, RequestIdMiddleware
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.errors import ConfigurationError

#: Modules under `gateway/resources/` the app mounts; adding a resource module is adding its
#: name here (and its operations to `gateway.operations.OPERATIONS`).
RESOURCE_MODULES = (
    "health",
    "functions",
    "batches",
    "invocations",
    "schedules",
    "audit",
    "secrets",
    "tenants",
)


class ResourceModule(Protocol):
    def add_routes(self, app: WsgiApp, runtime: Runtime) -> None: ...


def _resource_module(name: str) -> ResourceModule:
    module = importlib.import_module(f"gateway.resources.{name}")
    if not hasattr(module, "add_routes"):
        raise ConfigurationError(f"gateway.resources.{name} lacks add_routes")
    return cast(ResourceModule, module)


def create_app(runtime: Runtime) -> WsgiApp:
    """Build the WSGI app over a runtime's services, registry and settings."""
    app: WsgiApp = falcon.App(
        middleware=[
            # First: it times everything the others do, and counts every answer.
            HttpMetricsMiddleware(runtime.metrics),
            # First in, last out: the request id is on every response and in every log line.
            RequestIdMiddleware(),
            AccessLogMiddleware(),
            AuthMiddleware(runtime.tenants),
        ]
    )
    errors.install(app)
    for name in RESOURCE_MODULES:
        _resource_module(name).add_routes(app, runtime)
    document = functools.partial(
        openapi.build_document,
        runtime.registry,
        max_wait_s=runtime.settings.max_wait_s,
        max_delay_s=runtime.settings.max_delay_s,
    )
    app.add_route("/openapi.json", openapi.OpenApiDocument(document, runtime.registry))
    add_metrics_route(app, runtime)
    add_dashboard_routes(app, runtime)
    return app
