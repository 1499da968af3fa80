"""Per-route checks, run as `@falcon.before(...)` hooks before a responder."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import falcon

from gateway.errors import Problem
from gateway.middleware import caller_of
from runtime.errors import InputInvalid

Hook = Callable[[falcon.Request, falcon.Response, Any, dict[str, Any]], None]

#: The deepest nesting of objects and arrays a request body may have: deeper input is
#: refused before validation (pydantic and the JSON encoder recurse, and would fail).
MAX_JSON_DEPTH = 64


def require_scope(scope: str) -> Hook:
    """Let the request through only if its API key has `scope` (admin has them all)."""

    def check(
        req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if not caller_of(req).principal.has(scope):
            raise Problem(
                403,
                kind="scope-missing",
                title="The API key lacks a needed scope.",
                detail=f"this needs an API key with the {scope!r} scope",
            )

    check.__name__ = f"require_{scope}_scope"
    return check


def known_function(
    req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
) -> None:
    """Answer 404 for an unknown function, 403 for a key it does not let invoke it.

    Both before the body is read. A function may ask more than `invoke` of the key
    (`@function(invoke_scope=...)`); an internal one is an operator key's alone.
    """
    function = resource.registry.get(params["name"])
    principal = caller_of(req).principal
    if principal.has(function.http_scope):
        return
    if function.spec.internal:
        raise Problem(
            403,
            kind="function-internal",
            title="The function is not invoked over HTTP by a tenant's key.",
            detail=f"{function.name} is internal: schedules, other functions and operator "
            "keys run it",
        )
    raise Problem(
        403,
        kind="scope-missing",
        title="The API key lacks a needed scope.",
        detail=f"invoking {function.name} needs an API key with the {function.http_scope!r} scope",
    )


def _is_json(content_type: str | None) -> bool:
    media_type, *parameters = (content_type or "").split(";")
    if media_type.strip().lower() != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return False
    return True


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # A literal such as 1e999 parses to infinity, which no JSON column can store.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def json_depth_over(value: Any, limit: int) -> bool:
    """Whether objects and arrays in `value` nest more than `limit` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _too_deep() -> Problem:
    return Problem(
        400,
        kind="body-too-deep",
        title="The body nests too deeply.",
        detail=f"objects and arrays in the body may nest at most {MAX_JSON_DEPTH} deep",
    )


def json_object_body(
    req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
) -> None:
    """Read the body as a JSON object into `req.context.payload`.

    415 unless it is `application/json` (UTF-8), 413 over `resource.max_body_bytes`
    (by Content-Length, and by reading at most one byte more than allowed), 400 when it
    is not JSON or nests deeper than `MAX_JSON_DEPTH`, 422 when it is JSON but not an
    object.
    """
    if not _is_json(req.content_type):
        raise Problem(
            415,
            kind="unsupported-media-type",
            title="The body must be application/json.",
            detail=f"send the input as application/json, not {req.content_type or 'no type'}",
        )
    limit: int = resource.max_body_bytes
    too_large = Problem(
        413,
        kind="body-too-large",
        title="The body is too large.",
        detail=f"the body may have at most {limit} bytes",
    )
    if req.content_length is not None and req.content_length > limit:
        raise too_large
    # Without Content-Length (chunked), read the server's terminated stream; either way
    # never more than one byte over the limit.
    chunked = req.content_length is None and req.env.get("wsgi.input_terminated")
    raw = (req.stream if chunked else req.bounded_stream).read(limit + 1)
    if len(raw) > limit:
        raise too_large
    try:
        body = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except RecursionError as ex:
        raise _too_deep() from ex
    except ValueError as ex:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; the body is never echoed.
        raise Problem(
            400,
            kind="malformed-json",
            title="The body is not valid JSON.",
            detail=f"the body could not be read as JSON: {ex}",
        ) from ex
    if json_depth_over(body, MAX_JSON_DEPTH):
        raise _too_deep()
    if not isinstance(body, dict):
        raise InputInvalid(
            "the input must be a JSON object",
            errors=[{"loc": [], "msg": "Input should be a JSON object"}],
        )
    req.context.payload = body
