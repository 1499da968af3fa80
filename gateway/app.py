"""The app factory: each resource is built with the services it uses, taken from a `Runtime`."""

from __future__ import annotations

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

#: Modules under `gateway/resources/` the app mounts, each with its part of the OpenAPI
#: document; adding a resource module is adding its name here.
RESOURCE_MODULES = ("health", "functions", "invocations", "schedules")


class ResourceModule(Protocol):
    def add_routes(self, app: WsgiApp, runtime: Runtime) -> None: ...

    def describe_api(self, runtime: Runtime) -> openapi.ApiPart: ...


def _resource_module(name: str) -> ResourceModule:
    module = importlib.import_module(f"gateway.resources.{name}")
    if not (hasattr(module, "add_routes") and hasattr(module, "describe_api")):
        raise ConfigurationError(f"gateway.resources.{name} lacks add_routes or describe_api")
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
    modules = [_resource_module(name) for name in RESOURCE_MODULES]
    for module in modules:
        module.add_routes(app, runtime)
    parts = [module.describe_api(runtime) for module in modules]
    parts.append(openapi.ApiPart(paths=openapi.OPENAPI_PATH))
    app.add_route("/openapi.json", openapi.OpenApiDocument(openapi.build_document(parts)))
    add_metrics_route(app, runtime)
    add_dashboard_routes(app, runtime)
    return app
