"""The OpenAPI 3.1 document: a table of operations over the response models of `gateway.schemas`.

Bodies are the models' JSON schemas (components/schemas); each function adds its own invoke
path with its input as the body and its output as `result`. Parameters and problem answers
are written once, under components, and named by the operations.
"""

from __future__ import annotations

import http
import importlib.metadata
import re
from collections.abc import Callable, Iterable
from typing import Any

import falcon
import pydantic
from pydantic.json_schema import models_json_schema

from gateway import params
from gateway.batch_schemas import BATCH_MODELS
from gateway.errors import PROBLEM_JSON
from gateway.hooks import MAX_JSON_DEPTH
from gateway.links import components_links
from gateway.operations import OPERATIONS, BodySchema, Operation, invoke_operation, ref
from gateway.schemas import (
    MODELS,
    Problem,
    invoke_url,
)
from runtime.registry import Registry
from runtime.secrets.values import SECRET_NAME_PATTERN
from runtime.services.invocation_values import IDEMPOTENCY_KEY_PATTERN
from runtime.settings import DEFAULT_MAX_DELAY_S

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"


def schema_name(text: str) -> str:
    """A valid component name (OpenAPI allows `[A-Za-z0-9._-]`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def model_schemas(model: type[pydantic.BaseModel], name: str) -> dict[str, Any]:
    """A function's model as components: `name`, and its `$defs` as `name.Def`."""
    schema = model.model_json_schema(ref_template=f"#/components/schemas/{name}.{{model}}")
    definitions = schema.pop("$defs", {})
    return {name: schema, **{f"{name}.{key}": value for key, value in definitions.items()}}


#: Problem answers by status: the component's name, and when it happens.
PROBLEMS = {
    400: (
        "BadRequest",
        f"A parameter, a header or the JSON body is malformed (the body may nest at most "
        f"{MAX_JSON_DEPTH} deep), or a run is asked for further ahead than allowed.",
    ),
    401: ("Unauthenticated", "The API key is missing, unknown, revoked or expired."),
    403: (
        "Forbidden",
        "The key lacks the scope, names another tenant, or the tenant is suspended.",
    ),
    404: (
        "NotFound",
        "No such resource (another tenant's looks the same), or no such X-Tenant-ID.",
    ),
    409: ("Conflict", "The resource is not in a state that allows this."),
    413: ("PayloadTooLarge", "The body is over FERRY_MAX_BODY_BYTES."),
    415: ("UnsupportedMediaType", "The body is not application/json (UTF-8)."),
    422: ("Unprocessable", "The input is not valid for the function, or the key was reused."),
    429: (
        "TooManyRequests",
        "A limit of the tenant (named in `limit`) refused it; nothing stored.",
    ),
    503: ("Unavailable", "The store is unreachable (nothing was done); try again later."),
}
PROBLEM_HEADERS = {401: ("WWWAuthenticate",), 429: ("RetryAfter",), 503: ("RetryAfter",)}
#: What any operation that needs a key may answer.
KEYED_PROBLEMS = (401, 403, 404, 503)
#: components/headers: key -> the header, what it says, whether always sent, its schema.
HEADERS: dict[str, tuple[str, str, bool, dict[str, Any]]] = {
    "XRequestId": ("X-Request-ID", "The client's valid X-Request-ID, else a new id.", True, {}),
    "Location": ("Location", "The invocation's URL.", True, {}),
    "MaybeLocation": ("Location", "The invocation's URL, when one was made.", False, {}),
    "IdempotentReplayed": ("Idempotent-Replayed", "A replay.", False, {"const": "true"}),
    "RetryAfter": ("Retry-After", "Seconds to wait.", True, {"type": "integer"}),
    "WWWAuthenticate": ("WWW-Authenticate", "The scheme to use: Bearer.", True, {}),
}


def _parameters(max_wait_s: float, max_delay_s: float) -> dict[str, Any]:
    """components/parameters: each one's name, place, schema and meaning."""
    text: dict[str, Any] = {"type": "string"}
    furthest = f"at most {max_delay_s:g} seconds from now (FERRY_MAX_DELAY_S); later is a 400"
    # fmt: off
    table: dict[str, tuple[str, str, dict[str, Any], str]] = {
        "name": ("name", "path", text, "The function's name."),
        "invocation_id": ("invocation_id", "path", text, "The invocation's id."),
        "schedule_id": ("schedule_id", "path", text, "The schedule's id."),
        "secret_name": ("secret_name", "path", {"type": "string", "pattern": SECRET_NAME_PATTERN},
                        "The secret's name (another is a 400)."),
        "tenant_id": ("tenant_id", "path", text, "The tenant's id."),
        "XTenantId": ("X-Tenant-ID", "header", text, "With an admin key: the tenant to act for "
                      "(404 if there is none). Any other key may only name its own tenant."),
        "IdempotencyKey": ("Idempotency-Key", "header", {"type": "string", "minLength": 1,
                           "maxLength": 255, "pattern": IDEMPOTENCY_KEY_PATTERN},
                           "1 to 255 printable ASCII characters. The same key and body from the "
                           "same tenant give one invocation, however often sent; a retried "
                           "trigger runs once. A key is kept as long as its invocation: "
                           "until its retention ends after it finished (by default a day "
                           "after it succeeded, a week after it failed or was cancelled; "
                           "FERRY_RETENTION_SUCCEEDED_S, _FAILED_S, _CANCELLED_S and per "
                           "tenant). Then the invocation is removed, and the key makes a new "
                           "one. An unfinished invocation keeps its key."),
        "CallbackUrl": params.CALLBACK_URL_PARAMETER,
        "wait": ("wait", "query", {"type": "number", "minimum": 0, "maximum": max_wait_s},
                 "Seconds to hold the request until the invocation finishes. While the "
                 "tenant (or the server) holds as many waits as it may, the answer is 202 "
                 "at once, as when the wait runs out."),
        "delay": ("delay", "query", {"type": "number", "minimum": 0, "maximum": max_delay_s},
                  f"Run it this many seconds from now, {furthest}. Not together with `at` "
                  "(that is a 400)."),
        "at": ("at", "query", {"type": "string", "format": "date-time",
               "pattern": params.RFC3339_PATTERN},
               f"Run it at this RFC 3339 time, with its offset, {furthest}. Not together "
               "with `delay`."),
        "function": ("function", "query", text, "Only this function's."),
        "status": ("status", "query", ref("schemas", "Status"), "Only those in this status."),
        "limit": ("limit", "query", {"type": "integer", "minimum": 1, "maximum": params.MAX_LIMIT,
                  "default": params.DEFAULT_LIMIT}, "Page size."),
        "cursor": ("cursor", "query", {"type": "string", "pattern": params.CURSOR_PATTERN},
                   "`next_cursor` of the previous page; any other value is a 400."),
        "audit_action": ("action", "query", text, "Only this action, like `invocation.cancel`."),
        "audit_target": ("target", "query", text, "Only actions on this id."),
        "audit_actor": ("actor", "query", text, "Only this key id (or OS user of a command)."),
        "since": ("since", "query", {"type": "string", "format": "date-time",
                  "pattern": params.RFC3339_PATTERN}, "Only records from this RFC 3339 time."),
        "until": ("until", "query", {"type": "string", "format": "date-time",
                  "pattern": params.RFC3339_PATTERN}, "Only records before this RFC 3339 time."),
    }
    # fmt: on
    return {
        key: {"name": name, "in": where, "required": where == "path", "schema": schema}
        | {"description": meaning}
        for key, (name, where, schema, meaning) in table.items()
    }


def _content(body: BodySchema, media_type: str) -> dict[str, Any]:
    if body is None:
        return {}
    schema = ref("schemas", body.__name__) if isinstance(body, type) else body
    return {"content": {media_type: {"schema": schema}}}


def _answer(
    status: int, body: BodySchema, headers: Iterable[str] = (), links: Iterable[str] = ()
) -> dict[str, Any]:
    is_problem = isinstance(body, type) and issubclass(body, Problem)
    if is_problem:
        headers = (*headers, *PROBLEM_HEADERS.get(status, ()))
    answer = {
        "description": PROBLEMS[status][1] if is_problem else http.HTTPStatus(status).phrase,
        "headers": {HEADERS[h][0]: ref("headers", h) for h in ("XRequestId", *headers)},
        **_content(body, PROBLEM_JSON if is_problem else JSON),
    }
    if links:
        answer["links"] = {name: ref("links", name) for name in links}
    return answer


def _operation(op: Operation) -> dict[str, Any]:
    problems = sorted({*op.problems, *(() if op.public else KEYED_PROBLEMS)} - set(op.answers))
    parameters = [*op.parameters, *(() if op.public else ("XTenantId",))]
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": [ref("parameters", name) for name in parameters],
        "responses": {
            **{
                str(s): _answer(s, body, op.headers, op.links.get(s, ()))
                for s, body in op.answers.items()
            },
            **{str(s): ref("responses", PROBLEMS[s][0]) for s in problems},
        },
    }
    if op.description:
        document["description"] = op.description
    if op.public:
        document["security"] = []
    if op.request_body is not None:
        document["requestBody"] = {"required": True, "content": {JSON: {"schema": op.request_body}}}
    return document


def function_operations(registry: Registry) -> tuple[list[Operation], dict[str, Any]]:
    """Each function's own invoke path, its input as the body and its output as `result`."""
    operations, schemas = [], {}
    for function in registry:
        prefix = schema_name(function.name)
        schemas.update(model_schemas(function.spec.input_model, f"{prefix}.Input"))
        if function.refuses_unknown_fields:
            schemas[f"{prefix}.Input"]["additionalProperties"] = False
        result: dict[str, Any] = {"type": "null"}
        if function.spec.output_model is not None:
            schemas.update(model_schemas(function.spec.output_model, f"{prefix}.Output"))
            result = {"anyOf": [ref("schemas", f"{prefix}.Output"), {"type": "null"}]}
        answer = {"allOf": [ref("schemas", "Invocation"), {"properties": {"result": result}}]}
        summary = (function.spec.description.splitlines() or [f"Invoke {function.name}."])[0]
        body = ref("schemas", f"{prefix}.Input")
        path, description = invoke_url(function.name), function.spec.description
        description += f"\n\nNeeds an API key with the `{function.http_scope}` scope." + (
            " Internal: run by schedules, other functions and operator keys only."
            if function.spec.internal
            else ""
        )
        operations.append(
            invoke_operation(f"invoke_{prefix}", summary, body, answer, path, description)
        )
    return operations, schemas


def build_document(
    registry: Registry, *, max_wait_s: float, max_delay_s: float = DEFAULT_MAX_DELAY_S
) -> dict[str, Any]:
    """The whole document for a deployment's functions."""
    own, function_schemas = function_operations(registry)
    paths: dict[str, Any] = {}
    for op in (*OPERATIONS, *own):
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    _, models = models_json_schema(
        [(model, "serialization") for model in (*MODELS, *BATCH_MODELS)],
        ref_template="#/components/schemas/{model}",
    )
    try:
        version = importlib.metadata.version("ferry-runtime")
    except importlib.metadata.PackageNotFoundError:
        version = "0.0.0"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Ferry",
            "version": version,
            "description": "Invoke functions, follow their invocations, operate the runtime.",
        },
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
            },
            "parameters": _parameters(max_wait_s, max_delay_s),
            "headers": {
                key: {
                    "description": text,
                    "required": always,
                    "schema": {"type": "string"} | schema,
                }
                for key, (_name, text, always, schema) in HEADERS.items()
            },
            "responses": {
                name: _answer(status, Problem) for status, (name, _text) in PROBLEMS.items()
            },
            "links": components_links(),
            "schemas": {**models["$defs"], **function_schemas},
        },
    }


class OpenApiDocument:
    """GET /openapi.json: the document, built again only when the functions change.

    Functions change only when `ferry dev` reloads them (`Registry.generation`).
    """

    public = True

    def __init__(self, build: Callable[[], dict[str, Any]], registry: Registry) -> None:
        self._build = build
        self._registry = registry
        self._built = (registry.generation, build())

    @property
    def document(self) -> dict[str, Any]:
        generation, document = self._built
        if generation != self._registry.generation:
            # Two requests may both build it; either result is the same document.
            generation = self._registry.generation
            document = self._build()
            self._built = (generation, document)
        return document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document
