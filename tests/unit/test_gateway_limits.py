"""Limits over HTTP: 429 at accept, and the operators' `/v1/tenants/{id}/limits`.

Every answer is checked against /openapi.json; each test runs on both backends.
"""

from __future__ import annotations

from tests.unit.conftest import assert_problem, invoke

NOW = 1_800_000_000.0


def test_over_the_rate_is_429_with_retry_after_and_nothing_stored(client, headers, runtime, tenant):
    runtime.limits.wall_clock = lambda: NOW
    runtime.limits.set(tenant, {"rate_per_s": 0.25, "burst": 2})
    accepted = [invoke(client, headers, "echo", {"message": f"{n}"}) for n in range(2)]
    assert [r.status_code for r in accepted] == [202, 202]
    refused = invoke(client, {**headers, "Idempotency-Key": "new-1"}, "echo", {"message": "x"})
    problem = assert_problem(refused, 429, "limit-exceeded")
    assert refused.headers["retry-after"] == "4"  # a token every 4 s
    assert problem["limit"] == "rate_per_s" and problem["retry_after_s"] == 4.0
    assert tenant in problem["detail"] and "0.25 per second" in problem["detail"]
    listed = runtime.invocations.list(tenant).invocations
    assert len(listed) == 2
    assert runtime.store.invocations.find_by_key(tenant, "echo", "new-1") is None
    # A replay of a stored key is answered, not refused
    replay = invoke(client, {**headers, "Idempotency-Key": listed[0].idempotency_key}, "echo",
                    {"message": listed[0].payload["message"]})  # fmt: skip
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    # The refusal was counted by tenant and limit
    sample = runtime.metrics.limit_refusals.labels(tenant=tenant, limit="rate_per_s")
    assert sample._value.get() == 1


def test_over_max_waiting_is_429(client, headers, runtime, tenant):
    runtime.limits.set(tenant, {"max_waiting": 1})
    assert invoke(client, headers, "echo", {"message": "a"}, delay=60).status_code == 202
    refused = invoke(client, headers, "echo", {"message": "b"})
    problem = assert_problem(refused, 429, "limit-exceeded")
    assert problem["limit"] == "max_waiting" and int(refused.headers["retry-after"]) >= 1
    assert len(runtime.invocations.list(tenant).invocations) == 1


def test_operators_read_and_replace_a_tenants_limits(client, headers_for, runtime, tenant):
    operator = headers_for(tenant, "admin")
    url = f"/v1/tenants/{tenant}/limits"
    shown = client.simulate_get(url, headers=operator)
    assert shown.status_code == 200, shown.text
    assert shown.json["own"] == dict.fromkeys(
        ("rate_per_s", "burst", "concurrency", "max_waiting", "weight")
    )
    assert shown.json["effective"]["weight"] == 1 and shown.json["waiting"] == 0
    changed = client.simulate_put(
        url, json={"rate_per_s": 5, "burst": 10, "concurrency": 3}, headers=operator
    )
    assert changed.status_code == 200, changed.text
    assert changed.json["own"]["rate_per_s"] == 5 and changed.json["effective"]["concurrency"] == 3
    assert runtime.limits.own(tenant).burst == 10
    # PUT replaces: what it leaves out goes back to the default
    replaced = client.simulate_put(url, json={"weight": 4}, headers=operator)
    assert replaced.json["own"]["rate_per_s"] is None and replaced.json["own"]["weight"] == 4
    assert client.simulate_put(url, json={}, headers=operator).json["own"]["weight"] is None


def test_limits_refuse_bad_values_unknown_tenants_and_tenant_keys(client, headers_for, tenant):
    operator = headers_for(tenant, "admin")
    url = f"/v1/tenants/{tenant}/limits"
    for body in ({"rate_per_s": -1}, {"weight": 0}, {"burst": 1.5}, {"speed": 1}):
        assert_problem(client.simulate_put(url, json=body, headers=operator), 400)
    assert_problem(client.simulate_put(url, json=[1], headers=operator), 422)
    missing = client.simulate_get("/v1/tenants/nobody/limits", headers=operator)
    assert_problem(missing, 404)
    # A tenant's own key, even with every scope it may have, is no operator
    own = headers_for(tenant, "invoke,read,manage")
    assert_problem(client.simulate_get(url, headers=own), 403)
    assert_problem(client.simulate_put(url, json={"weight": 9}, headers=own), 403)
    assert_problem(client.simulate_get(url), 401)
