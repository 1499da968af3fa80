"""Functions and invoking them: `/v1/functions`, `/v1/functions/{name}/invocations`."""

from __future__ import annotations

from typing import ClassVar

import falcon

from gateway import params, schemas
from gateway.hooks import json_object_body, known_function, require_scope
from gateway.middleware import caller_of, request_id_of
from gateway.schemas import invocation_url
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.registry import Registry
from runtime.services.invocations import InvocationService
from runtime.settings import MAX_DELAY_LIMIT_S


class FunctionCollection:
    """GET /v1/functions."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = schemas.FunctionList(
            functions=[schemas.Function.of(f) for f in self.registry]
        ).media()


class FunctionItem:
    """GET /v1/functions/{name}."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = schemas.Function.of(self.registry.get(name)).media()


class FunctionInvocations:
    """POST /v1/functions/{name}/invocations: invoke a function.

    The answer is 200 when the invocation in the body is finished and 202 while it is
    still going, whatever brought it there: `?wait=S` that saw it finish, or a replay of
    an `Idempotency-Key` whose invocation finished since. So a client retrying with the
    same key learns the outcome from the status code alone. A replay carries
    `Idempotent-Replayed: true`; every answer carries `Location` of the invocation. A
    replay answered to a key without `read` carries the invocation's id and status only.
    """

    #: The store checks the caller's key while it stores the invocation (`key_id` below),
    #: so the gateway may authenticate a POST's key with this scope from memory
    #: (`runtime.keycache`).
    key_checked_by_write: ClassVar[dict[str, str]] = {"POST": "invoke"}

    def __init__(
        self,
        registry: Registry,
        invocations: InvocationService,
        *,
        max_body_bytes: int,
        max_wait_s: float,
    ) -> None:
        self.registry = registry  # for the `known_function` hook
        self.invocations = invocations
        self.max_body_bytes = max_body_bytes  # for the `json_object_body` hook
        self.max_wait_s = max_wait_s

    @falcon.before(require_scope("invoke"))
    @falcon.before(known_function)
    @falcon.before(json_object_body)
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        key = params.idempotency_key(req)
        wait_s = params.seconds(req, "wait", maximum=self.max_wait_s)
        caller = caller_of(req)
        accepted = self.invocations.accept(
            tenant_id=caller.tenant_id,
            function=name,
            payload=req.context.payload,
            idempotency_key=key,
            trigger="http",
            request_id=request_id_of(req),
            delay_s=params.seconds(req, "delay", maximum=MAX_DELAY_LIMIT_S),
            at=params.rfc3339(req, "at"),
            callback_url=req.get_header("Ferry-Callback-URL"),
            key_id=caller.principal.key_id,
        )
        invocation, created = accepted
        if wait_s and not invocation.finished:
            invocation = self.invocations.wait(invocation, wait_s)
        resp.status = falcon.HTTP_200 if invocation.finished else falcon.HTTP_202
        resp.location = invocation_url(invocation.id)
        if not created:
            resp.set_header("Idempotent-Replayed", "true")
        if accepted.shows_details_to(can_read=caller.principal.has("read")):
            resp.media = schemas.Invocation.model_validate(invocation).media()
        else:
            resp.media = schemas.InvocationReceipt.model_validate(invocation).media()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    settings = runtime.settings
    app.add_route("/v1/functions", FunctionCollection(runtime.registry))
    app.add_route("/v1/functions/{name}", FunctionItem(runtime.registry))
    app.add_route(
        "/v1/functions/{name}/invocations",
        FunctionInvocations(
            runtime.registry,
            runtime.invocations,
            max_body_bytes=settings.max_body_bytes,
            max_wait_s=settings.max_wait_s,
        ),
    )
