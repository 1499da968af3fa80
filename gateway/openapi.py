"""The OpenAPI 3.1 document: shared parts here, each resource module adds its own paths.

A resource module's `describe_api(runtime)` returns an `ApiPart` (its paths and any
schemas it brings, such as each function's input and output); `build_document` merges
them under the shared components below.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from collections.abc import Iterable
from typing import Any

import falcon
import pydantic

from runtime.store.models import Status

OPENAPI_VERSION = "3.1.0"


@dataclasses.dataclass(frozen=True)
class ApiPart:
    """What one resource module adds to the document."""

    paths: dict[str, Any]
    schemas: dict[str, Any] = dataclasses.field(default_factory=dict)


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def schema_name(text: str) -> str:
    """A valid component name (OpenAPI allows `[A-Za-z0-9._-]`)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def model_schemas(model: type[pydantic.BaseModel], name: str) -> dict[str, Any]:
    """A pydantic model's JSON schema as components: `name`, and its `$defs` as `name.Def`.

    The `$defs` move to components/schemas, so every `$ref` in them and in the model's own
    schema is rewritten to point there (pydantic's `ref_template` writes them so).
    """
    schema = model.model_json_schema(ref_template=f"#/components/schemas/{name}.{{model}}")
    definitions = schema.pop("$defs", {})
    return {name: schema, **{f"{name}.{key}": value for key, value in definitions.items()}}


#: Problem responses by status code, shared by every operation.
PROBLEM_RESPONSES = {
    "400": ("BadRequest", "A parameter or the JSON body is malformed."),
    "401": ("Unauthenticated", "The API key is missing, unknown, revoked or expired."),
    "403": ("Forbidden", "The API key lacks the scope, or the tenant is suspended."),
    "404": ("NotFound", "No such resource (another tenant's looks the same)."),
    "409": ("Conflict", "The invocation is not in a state that allows this."),
    "413": ("PayloadTooLarge", "The body is over the size limit."),
    "415": ("UnsupportedMediaType", "The body is not application/json."),
    "422": ("Unprocessable", "The input is not valid, or the Idempotency-Key was reused."),
    "503": ("Unavailable", "The store or the broker is unreachable; nothing was accepted."),
}


def problems(*codes: int) -> dict[str, Any]:
    """Responses for the given problem status codes (401 and 503 are always possible)."""
    wanted = sorted({str(code) for code in (*codes, 401, 503)})
    return {
        code: {"$ref": f"#/components/responses/{PROBLEM_RESPONSES[code][0]}"} for code in wanted
    }


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _nullable(type_name: str, **extra: Any) -> dict[str, Any]:
    return {"type": [type_name, "null"], **extra}


TIME = {"type": "string", "format": "date-time"}
ERROR = {
    "type": ["object", "null"],
    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
}

SHARED_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "An RFC 9457 problem document.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri-reference"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["loc", "msg"],
                    "properties": {
                        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                        "msg": {"type": "string"},
                    },
                },
            },
        },
    },
    "Invocation": {
        "type": "object",
        "required": [
            "id",
            "function",
            "tenant_id",
            "status",
            "trigger",
            "idempotency_key",
            "attempts",
            "max_retries",
            "created_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "function": {"type": "string"},
            "tenant_id": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in Status]},
            "trigger": {"type": "string", "enum": ["http", "schedule", "invoke", "cli"]},
            "idempotency_key": {"type": "string"},
            "request_id": _nullable("string"),
            "parent_id": _nullable("string"),
            "attempts": {"type": "integer", "description": "How many runs have started."},
            "max_retries": {"type": "integer"},
            "created_at": TIME,
            "scheduled_for": _nullable("string", format="date-time"),
            "started_at": _nullable("string", format="date-time"),
            "finished_at": _nullable("string", format="date-time"),
            "duration_ms": _nullable("integer"),
            "result": {"description": "The function's output once it succeeded."},
            "error": ERROR,
        },
    },
    "Attempt": {
        "type": "object",
        "properties": {
            "number": {"type": "integer"},
            "started_at": TIME,
            "finished_at": _nullable("string", format="date-time"),
            "outcome": _nullable("string"),
            "error": ERROR,
        },
    },
    "InvocationDetail": {
        "allOf": [
            schema_ref("Invocation"),
            {
                "type": "object",
                "properties": {"attempt_log": {"type": "array", "items": schema_ref("Attempt")}},
            },
        ]
    },
    "InvocationList": {
        "type": "object",
        "properties": {
            "invocations": {"type": "array", "items": schema_ref("Invocation")},
            "next_cursor": _nullable("string"),
        },
    },
}


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": schema_ref("Problem")}},
    }


def build_document(parts: Iterable[ApiPart]) -> dict[str, Any]:
    """Merge the resource modules' parts into one OpenAPI 3.1 document."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = dict(SHARED_SCHEMAS)
    for part in parts:
        paths.update(part.paths)
        schemas.update(part.schemas)
    try:
        version = importlib.metadata.version("ferry-runtime")
    except importlib.metadata.PackageNotFoundError:
        version = "0.0.0"
    responses = {name: _problem_response(text) for name, text in PROBLEM_RESPONSES.values()}
    responses["Unavailable"]["headers"] = {
        "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}
    }
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
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: Authorization: Bearer <key>.",
                }
            },
            "parameters": {
                "XTenantId": {
                    "name": "X-Tenant-ID",
                    "in": "header",
                    "required": False,
                    "description": "With an admin key, the tenant to act for.",
                    "schema": {"type": "string"},
                },
            },
            "responses": responses,
            "schemas": schemas,
        },
    }


class OpenApiDocument:
    """GET /openapi.json: the document, built once (functions are fixed at start-up)."""

    public = True

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


OPENAPI_PATH = {
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This OpenAPI 3.1 document.",
            "tags": ["operations"],
            "security": [],
            "responses": {"200": {"description": "The document.", "content": json_content({})}},
        }
    }
}
