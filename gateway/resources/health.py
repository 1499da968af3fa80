"""Liveness and readiness probes; no API key needed."""

from __future__ import annotations

import falcon

from gateway import schemas
from gateway.errors import unavailable
from gateway.types import WsgiApp
from runtime.app import Runtime


class Liveness:
    """GET /healthz: 200 while the process can answer at all."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = schemas.Liveness(status="ok").media()


class Readiness:
    """GET /readyz: 200 when the store and the broker answer, else 503 naming what failed."""

    public = True

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = self.runtime.readiness()
        failed = sorted(name for name, state in checks.items() if state != "ok")
        if failed:
            raise unavailable(
                "not-ready",
                "Not ready.",
                f"unavailable: {', '.join(failed)}",
                checks=checks,
            )
        resp.media = schemas.Readiness(status="ready", checks=checks).media()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    app.add_route("/healthz", Liveness())
    app.add_route("/readyz", Readiness(runtime))
