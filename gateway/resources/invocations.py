"""Invocations: list, read, cancel and retry (`/v1/invocations`).

Reads use the caller's read scope (an admin key without `X-Tenant-ID` sees every
tenant); cancel and retry act for the caller's tenant. Another tenant's invocation is
filtered out by the store, so it answers 404 exactly like a missing one.
"""

from __future__ import annotations

import falcon

from gateway import params, schemas
from gateway.hooks import require_scope
from gateway.middleware import actor_of, caller_of
from gateway.schemas import invocation_url
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.services.invocations import InvocationService


class InvocationCollection:
    """GET /v1/invocations?function=&status=&limit=&cursor=, newest first."""

    def __init__(self, invocations: InvocationService) -> None:
        self.invocations = invocations

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        status = params.status(req)
        limit = params.limit(req)
        views, next_cursor = self.invocations.list(
            caller_of(req).read_tenant_id,
            function=req.get_param("function"),
            status=status,
            limit=limit,
            cursor=params.cursor(req),
        )
        resp.media = schemas.InvocationList(
            invocations=[schemas.Invocation.model_validate(v) for v in views],
            next_cursor=next_cursor,
        ).media()


class InvocationItem:
    """GET /v1/invocations/{id}; POST .../cancel and .../retry."""

    def __init__(self, invocations: InvocationService) -> None:
        self.invocations = invocations

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, invocation_id: str) -> None:
        found = self.invocations.get(invocation_id, caller_of(req).read_tenant_id)
        resp.media = schemas.InvocationDetail.of(
            found.invocation, found.attempts, found.callback
        ).media()

    @falcon.before(require_scope("manage"))
    def on_post_cancel(
        self, req: falcon.Request, resp: falcon.Response, invocation_id: str
    ) -> None:
        view = self.invocations.cancel(invocation_id, caller_of(req).tenant_id, actor=actor_of(req))
        resp.media = schemas.Invocation.model_validate(view).media()

    @falcon.before(require_scope("manage"))
    def on_post_retry(self, req: falcon.Request, resp: falcon.Response, invocation_id: str) -> None:
        view = self.invocations.retry(invocation_id, caller_of(req).tenant_id, actor=actor_of(req))
        resp.status = falcon.HTTP_202
        resp.location = invocation_url(view.id)
        resp.media = schemas.Invocation.model_validate(view).media()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    item = InvocationItem(runtime.invocations)
    app.add_route("/v1/invocations", InvocationCollection(runtime.invocations))
    app.add_route("/v1/invocations/{invocation_id}", item)
    app.add_route("/v1/invocations/{invocation_id}/cancel", item, suffix="cancel")
    app.add_route("/v1/invocations/{invocation_id}/retry", item, suffix="retry")
