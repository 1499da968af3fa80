"""Batch invoke over HTTP: `POST /v1/functions/{name}/invocations/batch`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import assert_problem

BATCH = "/v1/functions/echo/invocations/batch"


def post(client, headers, body: Any, path: str = BATCH, **kwargs: Any):
    return client.simulate_post(path, json=body, headers=headers, **kwargs)


def items(n: int, prefix: str = "m", keyed: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "input": {"message": f"{prefix}{i}"},
            **({"idempotency_key": f"{prefix}{i}"} if keyed else {}),
        }
        for i in range(n)
    ]


def test_a_batch_answers_each_item_in_order(client, headers, runtime, tenant):
    body = {"items": [*items(2), {"input": {"wrong": True}}, *items(1, "z")]}
    result = post(client, headers, body)
    assert result.status_code == 202, result.text
    answer = result.json["items"]
    assert [item["index"] for item in answer] == [0, 1, 2, 3]
    assert [item["status"] for item in answer] == ["queued", "queued", 422, "queued"]
    assert answer[0]["replayed"] is False
    assert answer[2]["type"] == "input-invalid"
    assert ["input", "message"] in [e["loc"] for e in answer[2]["errors"]]
    shown = client.simulate_get(f"/v1/invocations/{answer[3]['id']}", headers=headers).json
    assert shown["tenant_id"] == tenant and shown["trigger"] == "http"
    assert shown["result"] is None and shown["function"] == "echo"


def test_a_batch_of_replays_answers_200_and_stores_nothing(client, headers, runtime, tenant):
    body = {"items": items(3, keyed=True)}
    first = post(client, headers, body)
    again = post(client, headers, body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert [i["replayed"] for i in again.json["items"]] == [True] * 3
    assert [i["id"] for i in again.json["items"]] == [i["id"] for i in first.json["items"]]
    assert len(runtime.store.invocations.list(tenant)[0]) == 3
    # Another input under a stored key is that item's conflict only
    changed = {"items": [{"input": {"message": "new"}, "idempotency_key": "m0"}, *items(1, "n")]}
    mixed = post(client, headers, changed)
    assert mixed.status_code == 202
    assert mixed.json["items"][0]["type"] == "idempotency-conflict"
    assert mixed.json["items"][1]["replayed"] is False


@pytest.mark.parametrize(
    "body",
    [
        [],
        [{"input": {}}],
        {},
        {"items": []},
        {"items": "no"},
        {"items": [{"message": "not wrapped"}]},
        {"items": [{"input": "not an object"}]},
        {"items": [{"input": {}, "idempotency_key": ""}]},
        {"items": [{"input": {}, "idempotency_key": 7}]},
        {"items": [{"input": {}}], "extra": 1},
        {"items": items(1001)},
    ],
)
def test_a_body_that_is_not_a_batch_is_400(client, headers, runtime, tenant, body):
    assert_problem(post(client, headers, body), 400, "malformed-batch")
    assert runtime.store.invocations.list(tenant)[0] == []


def test_malformed_json_and_media_type(client, headers):
    bad = client.simulate_post(
        BATCH, body=b'{"items": [', headers={**headers, "Content-Type": "application/json"}
    )
    assert_problem(bad, 400, "malformed-json")
    text = client.simulate_post(BATCH, body=b"x", headers={**headers, "Content-Type": "text/plain"})
    assert_problem(text, 415)


def test_scope_function_and_limits(client, headers_for, runtime, tenant):
    read_only = headers_for(tenant, "read")
    assert_problem(post(client, read_only, {"items": items(1)}), 403, "scope-missing")
    full = headers_for(tenant)
    missing = "/v1/functions/nope/invocations/batch"
    assert_problem(post(client, full, {"items": items(1)}, missing), 404)
    runtime.limits.set(tenant, {"max_waiting": 2})
    refused = assert_problem(post(client, full, {"items": items(3)}), 429, "limit-exceeded")
    assert "max_waiting" in refused["detail"]
    assert runtime.store.invocations.list(tenant)[0] == []


def test_the_batch_operation_is_in_the_openapi_document(client):
    document = client.simulate_get("/openapi.json").json
    operation = document["paths"]["/v1/functions/{name}/invocations/batch"]["post"]
    assert operation["operationId"] == "invoke_batch"
    assert {"200", "202", "400", "413", "415", "422", "429"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    assert {"BatchRequest", "BatchResult"} <= set(schemas)
    assert schemas["BatchRequest"]["properties"]["items"]["maxItems"] == 1000


def test_a_secret_the_tenant_has_not_set_refuses_the_whole_batch(client, headers, runtime, tenant):
    path = "/v1/functions/use_crm_token/invocations/batch"
    refused = post(client, headers, {"items": [{"input": {}}, {"input": {}}]}, path)
    problem = assert_problem(refused, 422)
    assert "crm_token" in problem["detail"]
    assert runtime.store.invocations.list(tenant)[0] == []
