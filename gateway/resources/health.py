"""Liveness and readiness probes; no API key needed."""

from __future__ import annotations

from collections.abc import Callable

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
    """GET /readyz: 200 while the store answers, else 503; the body says what failed.

    The broker's state is reported but does not decide: what the store commits is accepted
    whatever the broker does (the sweep sends it later), so a Redis outage must not take
    every gateway out of its load balancer.
    """

    public = True

    def __init__(self, readiness: Callable[[], dict[str, str]]) -> None:
        #: `ok` or what failed, by backing service (`Runtime.readiness`).
        self.readiness = readiness

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = self.readiness()
        failed = sorted(name for name, state in checks.items() if state != "ok")
        if "store" in failed:
            raise unavailable(
                "not-ready",
                "Not ready.",
                f"unavailable: {', '.join(failed)}",
                checks=checks,
            )
        resp.media = schemas.Readiness(status="ready", checks=checks).media()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    app.add_route("/healthz", Liveness())
    app.add_route("/readyz", Readiness(runtime.readiness))
