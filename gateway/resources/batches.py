"""Batch invoke: `POST /v1/functions/{name}/invocations/batch`, up to 1,000 inputs at once.

The body is `{"items": [{"input": {...}, "idempotency_key": "..."}, ...]}`. The answer
lists each item's invocation (`replayed` when its key was stored before with the same
input) or its own 422 errors, in the request's order: 200 when every item is a replay,
else 202. A body that is not JSON, or not of that shape, is a 400 before anything is
stored; a limit refuses the whole batch (429). `?delay=`, `?at=` and the
`Ferry-Callback-URL` header apply to every item. The rules are the service's
(`runtime.services.batches`).
"""

from __future__ import annotations

from typing import Any

import falcon
import pydantic

from gateway import params
from gateway.batch_schemas import BatchRequest, BatchResult
from gateway.errors import Problem
from gateway.hooks import json_object_body, known_function, require_scope
from gateway.middleware import caller_of, request_id_of
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.errors import InputInvalid
from runtime.registry import Registry, validation_errors
from runtime.services.batches import BatchItem
from runtime.services.invocations import InvocationService
from runtime.settings import MAX_DELAY_LIMIT_S


def _bad_shape(errors: list[dict[str, Any]]) -> Problem:
    return Problem(
        400,
        kind="malformed-batch",
        title="The body is not a batch.",
        detail='send {"items": [{"input": {...}, "idempotency_key": "..."}, ...]} '
        "with 1 to 1000 items",
        errors=errors,
    )


def batch_body(
    req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
) -> None:
    """Read the body as a batch into `req.context.batch`; 400 unless it is one.

    415, 413 and malformed JSON as for a single invoke (`json_object_body`).
    """
    try:
        json_object_body(req, resp, resource, params)
    except InputInvalid as ex:
        raise _bad_shape(ex.errors) from ex
    try:
        req.context.batch = BatchRequest.model_validate(req.context.payload)
    except pydantic.ValidationError as ex:
        raise _bad_shape(validation_errors(ex)) from ex


class FunctionInvocationBatch:
    """POST /v1/functions/{name}/invocations/batch: invoke a function for many inputs."""

    def __init__(
        self, registry: Registry, invocations: InvocationService, *, max_body_bytes: int
    ) -> None:
        self.registry = registry  # for the `known_function` hook
        self.invocations = invocations
        self.max_body_bytes = max_body_bytes  # for the body hook

    @falcon.before(require_scope("invoke"))
    @falcon.before(known_function)
    @falcon.before(batch_body)
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        batch: BatchRequest = req.context.batch
        outcomes = self.invocations.accept_batch(
            tenant_id=caller_of(req).tenant_id,
            function=name,
            items=[BatchItem(item.input, item.idempotency_key) for item in batch.items],
            trigger="http",
            request_id=request_id_of(req),
            delay_s=params.seconds(req, "delay", maximum=MAX_DELAY_LIMIT_S),
            at=params.rfc3339(req, "at"),
            callback_url=req.get_header("Ferry-Callback-URL"),
        )
        all_replays = all(o.invocation is not None and not o.created for o in outcomes)
        resp.status = falcon.HTTP_200 if all_replays else falcon.HTTP_202
        resp.media = BatchResult.of(outcomes).media()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    app.add_route(
        "/v1/functions/{name}/invocations/batch",
        FunctionInvocationBatch(
            runtime.registry,
            runtime.invocations,
            max_body_bytes=runtime.settings.max_batch_body_bytes,
        ),
    )
