"""Invocations: list, read, cancel and retry (`/v1/invocations`).

Reads use the caller's read scope (an admin key without `X-Tenant-ID` sees every
tenant); cancel and retry act for the caller's tenant. Another tenant's invocation is
filtered out by the store, so it answers 404 exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

import falcon

from gateway import params
from gateway.hooks import require_scope
from gateway.middleware import caller_of
from gateway.openapi import ApiPart, json_content, problems, schema_ref
from gateway.resources.functions import invocation_url
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
            cursor=req.get_param("cursor"),
        )
        resp.media = {"invocations": [v.as_dict() for v in views], "next_cursor": next_cursor}


class InvocationItem:
    """GET /v1/invocations/{id}; POST .../cancel and .../retry."""

    def __init__(self, invocations: InvocationService) -> None:
        self.invocations = invocations

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, invocation_id: str) -> None:
        found = self.invocations.get(invocation_id, caller_of(req).read_tenant_id)
        resp.media = {
            **found.invocation.as_dict(),
            "attempt_log": [a.as_dict() for a in found.attempts],
        }

    @falcon.before(require_scope("manage"))
    def on_post_cancel(
        self, req: falcon.Request, resp: falcon.Response, invocation_id: str
    ) -> None:
        view = self.invocations.cancel(invocation_id, caller_of(req).tenant_id)
        resp.media = view.as_dict()

    @falcon.before(require_scope("manage"))
    def on_post_retry(self, req: falcon.Request, resp: falcon.Response, invocation_id: str) -> None:
        view = self.invocations.retry(invocation_id, caller_of(req).tenant_id)
        resp.status = falcon.HTTP_202
        resp.location = invocation_url(view.id)
        resp.media = view.as_dict()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    item = InvocationItem(runtime.invocations)
    app.add_route("/v1/invocations", InvocationCollection(runtime.invocations))
    app.add_route("/v1/invocations/{invocation_id}", item)
    app.add_route("/v1/invocations/{invocation_id}/cancel", item, suffix="cancel")
    app.add_route("/v1/invocations/{invocation_id}/retry", item, suffix="retry")


def describe_api(runtime: Runtime) -> ApiPart:
    invocation_id = {
        "name": "invocation_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    tenant = {"$ref": "#/components/parameters/XTenantId"}

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": schema, "description": description}

    return ApiPart(
        paths={
            "/v1/invocations": {
                "get": {
                    "operationId": "list_invocations",
                    "summary": "Invocations, newest first, in pages.",
                    "tags": ["invocations"],
                    "parameters": [
                        query("function", {"type": "string"}, "Only this function's."),
                        query(
                            "status",
                            {"type": "string", "enum": list(params.STATUSES)},
                            "Only those in this status.",
                        ),
                        query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                            "Page size.",
                        ),
                        query("cursor", {"type": "string"}, "`next_cursor` of the last page."),
                        tenant,
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of invocations.",
                            "content": json_content(schema_ref("InvocationList")),
                        },
                        **problems(400, 403, 404),
                    },
                }
            },
            "/v1/invocations/{invocation_id}": {
                "get": {
                    "operationId": "get_invocation",
                    "summary": "One invocation with its attempt log.",
                    "tags": ["invocations"],
                    "parameters": [invocation_id, tenant],
                    "responses": {
                        "200": {
                            "description": "The invocation.",
                            "content": json_content(schema_ref("InvocationDetail")),
                        },
                        **problems(403, 404),
                    },
                }
            },
            "/v1/invocations/{invocation_id}/cancel": {
                "post": {
                    "operationId": "cancel_invocation",
                    "summary": "Cancel an invocation that is not yet running.",
                    "tags": ["invocations"],
                    "parameters": [invocation_id, tenant],
                    "responses": {
                        "200": {
                            "description": "Cancelled.",
                            "content": json_content(schema_ref("Invocation")),
                        },
                        **problems(403, 404, 409),
                    },
                }
            },
            "/v1/invocations/{invocation_id}/retry": {
                "post": {
                    "operationId": "retry_invocation",
                    "summary": "Queue a failed or cancelled invocation again.",
                    "tags": ["invocations"],
                    "parameters": [invocation_id, tenant],
                    "responses": {
                        "202": {
                            "description": "Queued again.",
                            "content": json_content(schema_ref("Invocation")),
                        },
                        **problems(403, 404, 409),
                    },
                }
            },
        }
    )
