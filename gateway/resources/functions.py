"""Functions and invoking them: `/v1/functions`, `/v1/functions/{name}/invocations`."""

from __future__ import annotations

import time
from collections.abc import Callable

import falcon

from gateway import params, schemas
from gateway.hooks import json_object_body, known_function, require_scope
from gateway.middleware import caller_of, request_id_of
from gateway.schemas import invocation_url
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.errors import Unavailable
from runtime.store.views import InvocationView


class FunctionCollection:
    """GET /v1/functions."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = runtime.registry

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = schemas.FunctionList(
            functions=[schemas.Function.of(f) for f in self.registry]
        ).media()


class FunctionItem:
    """GET /v1/functions/{name}."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = runtime.registry

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = schemas.Function.of(self.registry.get(name)).media()


class FunctionInvocations:
    """POST /v1/functions/{name}/invocations: invoke a function.

    The answer is 200 when the invocation in the body is finished and 202 while it is
    still going, whatever brought it there: `?wait=S` that saw it finish, or a replay of
    an `Idempotency-Key` whose invocation finished since. So a client retrying with the
    same key learns the outcome from the status code alone. A replay carries
    `Idempotent-Replayed: true`; every answer carries `Location` of the invocation.
    """

    #: How often `?wait=` looks at the store, growing to `_POLL_MAX_S`.
    _POLL_FIRST_S = 0.02
    _POLL_MAX_S = 0.25

    def __init__(
        self,
        runtime: Runtime,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = runtime.registry
        self.dispatcher = runtime.dispatcher
        self.invocations = runtime.store.invocations
        self.clock = runtime.store.db.clock
        self.max_body_bytes = runtime.settings.max_body_bytes
        self.max_wait_s = runtime.settings.max_wait_s
        self.sleep = sleep
        self.monotonic = monotonic

    @falcon.before(require_scope("invoke"))
    @falcon.before(known_function)
    @falcon.before(json_object_body)
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        key = params.idempotency_key(req)
        wait_s = params.seconds(req, "wait", maximum=self.max_wait_s)
        scheduled_for = params.scheduled_for(req, self.clock())
        caller = caller_of(req)
        invocation, created = self.dispatcher.accept(
            tenant_id=caller.tenant_id,
            function=name,
            payload=req.context.payload,
            idempotency_key=key,
            trigger="http",
            request_id=request_id_of(req),
            scheduled_for=scheduled_for,
        )
        if wait_s and not invocation.finished:
            invocation = self._wait(invocation, wait_s)
        resp.status = falcon.HTTP_200 if invocation.finished else falcon.HTTP_202
        resp.location = invocation_url(invocation.id)
        if not created:
            resp.set_header("Idempotent-Replayed", "true")
        resp.media = schemas.Invocation.model_validate(invocation).media()

    def _wait(self, invocation: InvocationView, wait_s: float) -> InvocationView:
        """Poll the store until the invocation finishes or `wait_s` runs out."""
        deadline = self.monotonic() + wait_s
        interval = self._POLL_FIRST_S
        while not invocation.finished:
            left = deadline - self.monotonic()
            if left <= 0:
                break
            self.sleep(min(interval, left))
            interval = min(interval * 2, self._POLL_MAX_S)
            try:
                invocation = self.invocations.get(invocation.id, invocation.tenant_id)
            except Unavailable:
                # It was accepted already; answer 202 with what we know rather than 503.
                break
        return invocation


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    app.add_route("/v1/functions", FunctionCollection(runtime))
    app.add_route("/v1/functions/{name}", FunctionItem(runtime))
    app.add_route("/v1/functions/{name}/invocations", FunctionInvocations(runtime))
