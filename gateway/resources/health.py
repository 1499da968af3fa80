"""Liveness and readiness probes; no API key needed."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from gateway.errors import unavailable
from gateway.openapi import ApiPart, json_content
from gateway.types import WsgiApp
from runtime.app import Runtime


class Liveness:
    """GET /healthz: 200 while the process can answer at all."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Readiness:
    """GET /readyz: 200 when the store and the broker answer, else 503 naming what failed."""

    public = True

    def __init__(self, readiness: Callable[[], dict[str, str]]) -> None:
        #: `ok` or what failed, by backing service (`Runtime.readiness`).
        self.readiness = readiness

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = self.readiness()
        failed = sorted(name for name, state in checks.items() if state != "ok")
        if failed:
            raise unavailable(
                "not-ready",
                "Not ready.",
                f"unavailable: {', '.join(failed)}",
                checks=checks,
            )
        resp.media = {"status": "ready", "checks": checks}


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    app.add_route("/healthz", Liveness())
    app.add_route("/readyz", Readiness(runtime.readiness))


def describe_api(runtime: Runtime) -> ApiPart:
    checks = {"type": "object", "additionalProperties": {"type": "string"}}
    return ApiPart(
        paths={
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: 200 while the process lives.",
                    "tags": ["operations"],
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Alive.",
                            "content": json_content(
                                {"type": "object", "properties": {"status": {"const": "ok"}}}
                            ),
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: 200 when the store and the broker answer.",
                    "tags": ["operations"],
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": json_content(
                                {
                                    "type": "object",
                                    "properties": {"status": {"const": "ready"}, "checks": checks},
                                }
                            ),
                        },
                        "503": {"$ref": "#/components/responses/Unavailable"},
                    },
                }
            },
        }
    )
