"""Who may invoke which function over HTTP, system idempotency keys, and what a replay shows."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from runtime import Context, function
from runtime.errors import BadRequest, FunctionDefinitionError
from runtime.registry import Registry
from runtime.settings import Settings
from tests.unit.conftest import assert_problem, invoke


class Nothing(BaseModel):
    pass


def test_a_function_declares_the_scope_its_http_invokers_need():
    def handler(ctx: Context, payload: Nothing) -> None:
        return None

    assert function(handler).http_scope == "invoke"
    assert function(invoke_scope="manage")(handler).http_scope == "manage"
    # Internal: an operator key's alone over HTTP, whatever else it says
    assert function(internal=True)(handler).http_scope == "admin"
    with pytest.raises(FunctionDefinitionError, match="invoke_scope"):
        function(invoke_scope="root")(handler)
    registry = Registry({"h": function(invoke_scope="manage")(handler).resolve(Settings())})
    described = registry.get("h").describe()
    assert (described["invoke_scope"], described["internal"]) == ("manage", False)


def test_an_internal_function_is_refused_to_every_tenant_key_and_run_for_an_operator(
    client, runtime, headers_for, tenant
):
    # Given the housekeeping function, which is internal
    body = {"grace_days": 0}
    # When any key of the tenant invokes it over HTTP, Then 403, and nothing is stored
    for scopes in ("invoke", "invoke,read,manage"):
        refused = invoke(client, headers_for(tenant, scopes), "cleanup_expired_keys", body)
        assert_problem(refused, 403, "function-internal")
    assert runtime.invocations.list(tenant).invocations == []
    # And an operator key acting for the tenant may
    operator = headers_for(tenant, "admin", **{"X-Tenant-ID": tenant})
    accepted = invoke(client, operator, "cleanup_expired_keys", body)
    assert accepted.status_code == 202 and accepted.json["tenant_id"] == tenant
    # And the function list says who may invoke what
    listed = client.simulate_get("/v1/functions", headers=headers_for(tenant, "read")).json
    access = {f["name"]: (f["invoke_scope"], f["internal"]) for f in listed["functions"]}
    assert access["cleanup_expired_keys"] == ("admin", True)
    assert access["echo"] == ("invoke", False)


@pytest.mark.parametrize("key", ["schedule:nightly:2026-01-01T00:00:00.000Z", "invoke:p/echo/1"])
def test_a_client_cannot_use_the_keys_ferry_makes_itself(client, runtime, headers, tenant, key):
    # When a client sends a key of a schedule tick or of a child, Then 400, nothing stored
    result = invoke(client, {**headers, "Idempotency-Key": key}, "echo", {"message": "m"})
    assert "Ferry makes those itself" in assert_problem(result, 400, "bad-request")["detail"]
    assert runtime.invocations.list(tenant).invocations == []
    # And the CLI's keys follow the same rule
    with pytest.raises(BadRequest):
        runtime.invocations.accept(
            tenant_id=tenant,
            function="echo",
            payload={"message": "m"},
            idempotency_key=key,
            trigger="cli",
        )
    # While Ferry itself still makes them
    made = runtime.invocations.accept(
        tenant_id=tenant,
        function="echo",
        payload={"message": "m"},
        idempotency_key=key,
        trigger="schedule",
    )
    assert made.created and made.invocation.idempotency_key == key


def test_a_replay_shows_a_key_without_read_the_id_and_status_only(client, headers_for, tenant):
    # Given an invocation made by one caller with its own key
    body = {"message": "secret input"}
    first = invoke(client, {**headers_for(tenant), "Idempotency-Key": "order-7"}, "echo", body)
    assert first.status_code == 202 and "result" in first.json
    # When a key of invoke alone replays it
    invoke_only = {**headers_for(tenant, "invoke"), "Idempotency-Key": "order-7"}
    replay = invoke(client, invoke_only, "echo", body)
    # Then it learns that it exists and its status, nothing else
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json == {"id": first.json["id"], "status": "queued"}
    assert replay.headers["location"] == f"/v1/invocations/{first.json['id']}"
    # And its own first answer is whole (it sent the input), as is a reader's replay
    own = invoke(client, {**headers_for(tenant, "invoke"), "Idempotency-Key": "o-8"}, "echo", body)
    assert "result" in own.json and "error" in own.json
    reader = {**headers_for(tenant, "invoke,read"), "Idempotency-Key": "order-7"}
    assert invoke(client, reader, "echo", body).json == first.json
