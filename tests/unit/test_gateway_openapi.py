"""GET /openapi.json: every route, and each function's invoke path with its own schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.openapi import build_document
from runtime import Context, function
from runtime.registry import Registry
from runtime.settings import Settings

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


def test_a_functions_invoke_path_carries_its_input_and_output_schema(client, runtime):
    document = client.simulate_get("/openapi.json").json
    operation = document["paths"]["/v1/functions/echo/invocations"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/echo.Input"}
    echo = runtime.registry.get("echo")
    assert resolve(document, body["$ref"]) == echo.spec.input_model.model_json_schema()
    assert operation["description"] == echo.spec.description
    for status in ("200", "202"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        invocation, with_result = schema["allOf"]
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
    result_schema = slow["responses"]["200"]["content"]["application/json"]["schema"]["allOf"][1]
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
