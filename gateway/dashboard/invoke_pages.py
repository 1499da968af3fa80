"""Invoking a function from the dashboard: a form guided by the function's input schema.

GET /dashboard/functions/{name}/invoke shows a textarea prefilled with an example input
made from the function's JSON schema (its `examples`, `default`s, or a placeholder of
each property's type), the schema itself beside it, and an optional idempotency key.
POST (the session's CSRF token, a key with the function's invoke scope) calls the same
`InvocationService.accept` the API calls, then shows the created invocation. Input the
function refuses comes back on the form with the reasons, the text kept.
"""

from __future__ import annotations

import json
from typing import Any

import falcon
import structlog

from gateway.dashboard.auth import Forbidden, Viewer, action, first, page, redirect
from gateway.dashboard.resources import Base, invocation_path
from gateway.errors import STATUS_OF_ERROR
from runtime.errors import BadRequest, InputInvalid, RequestRejected
from runtime.registry import Function

log = structlog.get_logger("ferry.dashboard")

#: A placeholder per JSON-schema type, for a property with no example and no default.
_PLACEHOLDER: dict[str, Any] = {
    "string": "",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "array": [],
    "object": {},
    "null": None,
}


def example_of(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """An example value of a JSON schema (pydantic's): what the form starts from."""
    defs = schema.get("$defs", {}) if defs is None else defs
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return example_of(defs.get(ref.removeprefix("#/$defs/"), {}), defs)
    if schema.get("examples"):
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    for choice in schema.get("anyOf", []):  # Optional[X]: show X's example
        if choice.get("type") != "null":
            return example_of(choice, defs)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: example_of(sub, defs) for name, sub in schema.get("properties", {}).items()}
    return _PLACEHOLDER.get(kind if isinstance(kind, str) else "", None)


def _payload_of(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as ex:
        raise BadRequest(
            f"the input is not JSON: {ex.msg} (line {ex.lineno}, column {ex.colno})"
        ) from ex
    if not isinstance(payload, dict):
        raise BadRequest("the input must be a JSON object")
    return payload


class InvokeForm(Base):
    """GET /dashboard/functions/{name}/invoke: the form; POST: invoke it."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer, name: str) -> None:
        function = self.read.registry.get(name)
        example = example_of(function.spec.input_model.model_json_schema())
        self._form(resp, viewer, function, json.dumps(example, indent=2), "", None, 200)

    @action("invoke")
    def on_post(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        viewer: Viewer,
        form: dict[str, list[str]],
        name: str,
    ) -> None:
        function = self.read.registry.get(name)
        if not viewer.principal.has(function.http_scope):
            raise Forbidden(
                f"invoking {name} needs an API key with the {function.http_scope!r} scope"
            )
        tenant = viewer.caller.acting_tenant_id
        if tenant is None:
            raise Forbidden(
                "an operator key invokes for one tenant: choose it in the tenant filter first"
            )
        text = first(form, "payload") or ""
        key = (first(form, "idempotency_key") or "").strip() or None
        try:
            accepted = self.services.invocations.accept(
                tenant_id=tenant,
                function=name,
                payload=_payload_of(text),
                idempotency_key=key,
                trigger="http",
                request_id=str(req.context.request_id),
            )
        except RequestRejected as ex:
            status = next(STATUS_OF_ERROR[c] for c in type(ex).__mro__ if c in STATUS_OF_ERROR)
            problems = ex.errors if isinstance(ex, InputInvalid) else []
            self._form(resp, viewer, function, text, key or "", (ex.message, problems), status)
            return
        invocation = accepted.invocation
        log.info(
            "dashboard_invoke",
            function=name,
            invocation_id=invocation.id,
            tenant_id=tenant,
            key_id=viewer.principal.key_id,
            replayed=not accepted.created,
        )
        notice = "invoked" if accepted.created else "replayed"
        redirect(resp, invocation_path(invocation.id) + viewer.query(notice=notice))

    def _form(
        self,
        resp: falcon.Response,
        viewer: Viewer,
        function: Function,
        payload: str,
        idempotency_key: str,
        error: tuple[str, list[dict[str, Any]]] | None,
        status: int,
    ) -> None:
        self.gate.renderer.render(
            resp,
            "invoke.html",
            status=status,
            viewer=viewer,
            nav="functions",
            function=function,
            may_invoke=viewer.principal.has(function.http_scope),
            schema=json.dumps(function.spec.input_model.model_json_schema(), indent=2),
            payload=payload,
            idempotency_key=idempotency_key,
            error=error,
        )
