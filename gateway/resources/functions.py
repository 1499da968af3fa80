"""Functions and invoking them: `/v1/functions`, `/v1/functions/{name}/invocations`."""

from __future__ import annotations

import urllib.parse
from typing import Any

import falcon

from gateway import params
from gateway.hooks import json_object_body, known_function, require_scope
from gateway.middleware import caller_of, request_id_of
from gateway.openapi import ApiPart, json_content, model_schemas, problems, schema_name, schema_ref
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.registry import Function, Registry
from runtime.services.invocations import InvocationService


def invoke_url(name: str) -> str:
    return f"/v1/functions/{urllib.parse.quote(name, safe='')}/invocations"


def invocation_url(invocation_id: str) -> str:
    return f"/v1/invocations/{urllib.parse.quote(invocation_id, safe='')}"


def function_object(function: Function) -> dict[str, Any]:
    """The contract's `function` object."""
    return {**function.describe(), "invoke_url": invoke_url(function.name)}


class FunctionCollection:
    """GET /v1/functions."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"functions": [function_object(f) for f in self.registry]}


class FunctionItem:
    """GET /v1/functions/{name}."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = function_object(self.registry.get(name))


class FunctionInvocations:
    """POST /v1/functions/{name}/invocations: invoke a function.

    The answer is 200 when the invocation in the body is finished and 202 while it is
    still going, whatever brought it there: `?wait=S` that saw it finish, or a replay of
    an `Idempotency-Key` whose invocation finished since. So a client retrying with the
    same key learns the outcome from the status code alone. A replay carries
    `Idempotent-Replayed: true`; every answer carries `Location` of the invocation.
    """

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
        invocation, created = self.invocations.accept(
            tenant_id=caller_of(req).tenant_id,
            function=name,
            payload=req.context.payload,
            idempotency_key=key,
            trigger="http",
            request_id=request_id_of(req),
            delay_s=params.seconds(req, "delay"),
            at=params.rfc3339(req, "at"),
        )
        if wait_s and not invocation.finished:
            invocation = self.invocations.wait(invocation, wait_s)
        resp.status = falcon.HTTP_200 if invocation.finished else falcon.HTTP_202
        resp.location = invocation_url(invocation.id)
        if not created:
            resp.set_header("Idempotent-Replayed", "true")
        resp.media = invocation.as_dict()


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


# --- OpenAPI ----------------------------------------------------------------------------------

FUNCTION_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "queue": {"type": "string"},
        "max_retries": {"type": "integer"},
        "timeout_s": {"type": "number"},
        "input_schema": {"type": "object"},
        "output_schema": {"type": ["object", "null"]},
        "invoke_url": {"type": "string"},
    },
}


def _invoke_parameters(max_wait_s: float) -> list[dict[str, Any]]:
    return [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "1 to 255 printable ASCII characters; the same key and body from the "
            "same tenant give the same invocation, however often sent.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        {
            "name": "wait",
            "in": "query",
            "description": "Seconds to hold the request until the invocation finishes.",
            "schema": {"type": "number", "minimum": 0, "maximum": max_wait_s},
        },
        {
            "name": "delay",
            "in": "query",
            "description": "Run it this many seconds from now (not with `at`).",
            "schema": {"type": "number", "minimum": 0},
        },
        {
            "name": "at",
            "in": "query",
            "description": "Run it at this RFC 3339 time, with an offset (not with `delay`).",
            "schema": {"type": "string", "format": "date-time"},
        },
        {"$ref": "#/components/parameters/XTenantId"},
    ]


def _invoke_operation(
    max_wait_s: float,
    operation_id: str,
    summary: str,
    body: dict[str, Any],
    invocation: dict[str, Any],
    description: str = "",
) -> dict[str, Any]:
    location = {"Location": {"schema": {"type": "string"}, "description": "The invocation."}}
    replayed = {"Idempotent-Replayed": {"schema": {"const": "true"}, "description": "A replay."}}
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": ["functions"],
        "parameters": _invoke_parameters(max_wait_s),
        "requestBody": {"required": True, "content": json_content(body)},
        "responses": {
            "200": {
                "description": "Finished (after `wait`, or a replay of a finished one).",
                "headers": {**location, **replayed},
                "content": json_content(invocation),
            },
            "202": {
                "description": "Accepted; queued, scheduled or still running.",
                "headers": {**location, **replayed},
                "content": json_content(invocation),
            },
            **problems(400, 403, 404, 413, 415, 422),
        },
    }


def function_paths(registry: Registry, max_wait_s: float) -> ApiPart:
    """Each function's own invoke path, its input as the body and its output as `result`."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for function in registry:
        prefix = schema_name(function.name)
        schemas.update(model_schemas(function.spec.input_model, f"{prefix}.Input"))
        if function.spec.output_model is not None:
            schemas.update(model_schemas(function.spec.output_model, f"{prefix}.Output"))
            result: dict[str, Any] = {"anyOf": [schema_ref(f"{prefix}.Output"), {"type": "null"}]}
        else:
            result = {"type": "null"}
        invocation = {
            "allOf": [
                schema_ref("Invocation"),
                {"type": "object", "properties": {"result": result}},
            ]
        }
        summary = (function.spec.description.splitlines() or [f"Invoke {function.name}."])[0]
        paths[invoke_url(function.name)] = {
            "post": _invoke_operation(
                max_wait_s,
                f"invoke_{prefix}",
                summary,
                schema_ref(f"{prefix}.Input"),
                invocation,
                function.spec.description,
            )
        }
    return ApiPart(paths=paths, schemas=schemas)


def describe_api(runtime: Runtime) -> ApiPart:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    generic = _invoke_operation(
        runtime.settings.max_wait_s,
        "invoke",
        "Invoke a function by name (each function's own path has its schemas).",
        {"type": "object"},
        schema_ref("Invocation"),
    )
    generic["parameters"] = [name, *generic["parameters"]]
    own = function_paths(runtime.registry, runtime.settings.max_wait_s)
    return ApiPart(
        paths={
            "/v1/functions": {
                "get": {
                    "operationId": "list_functions",
                    "summary": "Every function of this deployment.",
                    "tags": ["functions"],
                    "responses": {
                        "200": {
                            "description": "The functions.",
                            "content": json_content(
                                {
                                    "type": "object",
                                    "properties": {
                                        "functions": {
                                            "type": "array",
                                            "items": schema_ref("Function"),
                                        }
                                    },
                                }
                            ),
                        },
                        **problems(403),
                    },
                }
            },
            "/v1/functions/{name}": {
                "get": {
                    "operationId": "get_function",
                    "summary": "One function.",
                    "tags": ["functions"],
                    "parameters": [name],
                    "responses": {
                        "200": {
                            "description": "The function.",
                            "content": json_content(schema_ref("Function")),
                        },
                        **problems(403, 404),
                    },
                }
            },
            "/v1/functions/{name}/invocations": {"post": generic},
            **own.paths,
        },
        schemas={"Function": FUNCTION_SCHEMA, **own.schemas},
    )
