"""GET /openapi.json: every route, and each function's invoke path with its own schemas."""

from __future__ import annotations

from typing import Any

import openapi_spec_validator
import pytest
from falcon.testing import TestClient
from pydantic import BaseModel

from gateway.app import create_app
from gateway.openapi import build_document
from runtime import Context, function
from runtime.registry import Registry
from runtime.settings import Settings
from tests.openapi_check import UndocumentedResponse
from tests.unit.conftest import invoke

ROUTES = {
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/openapi.json": {"get"},
    "/v1/functions": {"get"},
    "/v1/functions/{name}": {"get"},
    "/v1/functions/{name}/invocations": {"post"},
    "/v1/invocations": {"get"},
    "/v1/invocations/{invocation_id}": {"get"},
    "/v1/invocations/{invocation_id}/cancel": {"post"},
    "/v1/invocations/{invocation_id}/retry": {"post"},
}


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs_in(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs_in(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def assert_refs_resolve(document: dict[str, Any]) -> None:
    refs = refs_in(document)
    assert refs
    for ref in refs:
        resolve(document, ref)
    assert "$defs" not in repr(document)


def test_the_document_lists_every_route_and_every_function(client, runtime):
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    document = result.json
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = document["paths"]
    for path, methods in ROUTES.items():
        assert set(paths[path]) == methods, path
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert paths[path]["get"]["security"] == []
    for fn in runtime.registry:
        assert f"/v1/functions/{fn.name}/invocations" in paths
    assert_refs_resolve(document)
    openapi_spec_validator.validate(document)  # raises unless valid OpenAPI 3.1


def test_a_functions_invoke_path_carries_its_input_and_output_schema(client, runtime):
    document = client.simulate_get("/openapi.json").json
    operation = document["paths"]["/v1/functions/echo/invocations"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/echo.Input"}
    echo = runtime.registry.get("echo")
    # The input schema the function publishes: closed (additionalProperties: false) by default
    assert resolve(document, body["$ref"]) == echo.input_schema()
    assert resolve(document, body["$ref"])["additionalProperties"] is False
    assert operation["description"].startswith(echo.spec.description)
    assert "Needs an API key with the `invoke` scope." in operation["description"]
    for status in ("200", "202"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        # The invocation, or the receipt a replay gets without `read`
        full, receipt = schema["anyOf"]
        assert receipt == {"$ref": "#/components/schemas/InvocationReceipt"}
        invocation, with_result = full["allOf"]
        assert invocation == {"$ref": "#/components/schemas/Invocation"}
        output_ref = with_result["properties"]["result"]["anyOf"][0]["$ref"]
        assert resolve(document, output_ref)["properties"]["message"]["type"] == "string"
        assert {"location", "idempotent-replayed", "x-request-id"} == {
            h.lower() for h in operation["responses"][status]["headers"]
        }
    assert {"400", "401", "403", "404", "413", "415", "422", "503"} <= set(operation["responses"])
    parameters = [resolve(document, p["$ref"]) for p in operation["parameters"]]
    wait = next(p for p in parameters if p["name"] == "wait")
    assert wait["schema"]["maximum"] == runtime.settings.max_wait_s
    # A function without an output model has a null result
    slow = document["paths"]["/v1/functions/slow/invocations"]["post"]
    full = slow["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"][0]
    result_schema = full["allOf"][1]
    assert result_schema["properties"]["result"] == {"type": "null"}


class Address(BaseModel):
    city: str


class Node(BaseModel):
    name: str
    children: list[Node] = []


class NestedIn(BaseModel):
    home: Address
    work: Address | None = None
    tree: Node


class NestedOut(BaseModel):
    shipped_to: Address


@function
def ship(ctx: Context, payload: NestedIn) -> NestedOut:
    return NestedOut(shipped_to=payload.home)


def test_nested_and_recursive_models_move_their_defs_to_components():
    # Given a function whose models nest other models, one of them recursive
    registry = Registry({"ship": ship.resolve(Settings.from_env())})
    # When the document is built
    document = build_document(registry, max_wait_s=30)
    schemas = document["components"]["schemas"]
    # Then each nested model is a component under the function's name, and every ref resolves
    assert {
        "ship.Input",
        "ship.Input.Address",
        "ship.Input.Node",
        "ship.Output",
        "ship.Output.Address",
    } <= set(schemas)
    home = schemas["ship.Input"]["properties"]["home"]
    assert home == {"$ref": "#/components/schemas/ship.Input.Address"}
    children = schemas["ship.Input.Node"]["properties"]["children"]["items"]
    assert children == {"$ref": "#/components/schemas/ship.Input.Node"}
    assert schemas["ship.Input.Address"]["properties"]["city"]["type"] == "string"
    assert_refs_resolve(document)


def documented_by(runtime, change) -> TestClient:
    """A client over an app whose published document was changed by `change(document)`."""
    app = create_app(runtime)
    resource, *_ = app._router.find("/openapi.json")
    change(resource.document)
    return TestClient(app)


def test_the_schema_check_fails_an_answer_with_an_undocumented_status(runtime, headers):
    # Given a document that does not tell that a cancel can answer 409
    def forget_409(document):
        del document["paths"]["/v1/invocations/{invocation_id}/cancel"]["post"]["responses"]["409"]

    client = documented_by(runtime, forget_409)
    created = invoke(client, headers, "echo", {"message": "m"}).json
    client.simulate_post(f"/v1/invocations/{created['id']}/cancel", headers=headers)
    # When the API answers 409, the request itself fails, naming the operation
    with pytest.raises(UndocumentedResponse, match="409, which cancel_invocation does not"):
        client.simulate_post(f"/v1/invocations/{created['id']}/cancel", headers=headers)


def test_the_schema_check_fails_a_body_that_does_not_match(runtime, headers, tenant):
    # Given a document whose invocations are never queued, and a queued invocation
    def no_queued(document):
        status = document["components"]["schemas"]["Status"]
        status["enum"] = [s for s in status["enum"] if s != "queued"]

    client = documented_by(runtime, no_queued)
    queued = runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "m"})
    # When the API answers with it, the request fails, naming the field
    with pytest.raises(UndocumentedResponse, match="status: 'queued' is not one of"):
        client.simulate_get(f"/v1/invocations/{queued.invocation.id}", headers=headers)


def test_the_schema_check_takes_only_errors_off_the_documented_operations(runtime):
    # Given a route the document does not know, which answers 200
    class Extra:
        public = True

        def on_get(self, req, resp):
            resp.media = {"hello": "world"}

    app = create_app(runtime)
    app.add_route("/extra", Extra())
    client = TestClient(app)
    with pytest.raises(UndocumentedResponse, match="no operation is documented there"):
        client.simulate_get("/extra")
    # An unknown route answers a problem, which is fine
    assert client.simulate_get("/v1/unknown").status_code == 404
