"""API keys, scopes, operator keys acting for a tenant, suspended tenants, tenant isolation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from runtime.errors import RequestRejected
from runtime.store.models import ApiKey
from tests.unit.conftest import assert_problem, invoke

#: Every route that needs a key: (method, path, the scope it needs).
SCOPED_ROUTES = [
    ("GET", "/v1/functions", "read"),
    ("GET", "/v1/functions/echo", "read"),
    ("POST", "/v1/functions/echo/invocations", "invoke"),
    ("GET", "/v1/invocations", "read"),
    ("GET", "/v1/invocations/{id}", "read"),
    ("POST", "/v1/invocations/{id}/cancel", "manage"),
    ("POST", "/v1/invocations/{id}/retry", "manage"),
]


def call(client, method, path, headers, invocation_id="missing"):
    kwargs = {"headers": headers}
    if method == "POST" and path.endswith("/invocations"):
        kwargs["json"] = {"message": "hi"}
    return client.simulate_request(method, path.replace("{id}", invocation_id), **kwargs)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer fy_000000000000_" + "A" * 43,
    ],
    ids=["missing", "empty", "no-token", "basic", "malformed", "unknown"],
)
def test_a_missing_or_unknown_key_is_401_on_every_scoped_route(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, _scope in SCOPED_ROUTES:
        result = call(client, method, path, headers)
        assert_problem(result, 401, "unauthenticated")
        assert result.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_key_is_401(client, runtime, make_key, tenant):
    key = make_key(tenant, "read")
    runtime.store.tenants.revoke_key(key.split("_")[1])
    result = client.simulate_get("/v1/functions", headers={"Authorization": f"Bearer {key}"})
    assert_problem(result, 401, "unauthenticated")


def test_a_key_without_the_scope_is_403_and_with_it_passes(client, headers_for, tenant):
    invocation_id = invoke(client, headers_for(tenant, "invoke"), "echo", {"message": "x"}).json[
        "id"
    ]
    for method, path, scope in SCOPED_ROUTES:
        others = ",".join(s for s in ("invoke", "read", "manage") if s != scope)
        refused = call(client, method, path, headers_for(tenant, others), invocation_id)
        assert_problem(refused, 403, "scope-missing")
        allowed = call(client, method, path, headers_for(tenant, scope), invocation_id)
        # With the scope the request gets past auth (a 409 is the route's own answer).
        assert allowed.status_code in (200, 202, 409), (method, path, allowed.text)


def test_health_readiness_and_openapi_need_no_key(client):
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert client.simulate_get(path).status_code == 200


def test_the_tenant_comes_from_the_key_never_from_the_body(
    client, headers, tenant, make_tenant, runtime
):
    other = make_tenant()
    # A body naming a tenant is refused: `tenant_id` is no field of the input
    result = invoke(client, headers, "echo", {"message": "x", "tenant_id": other})
    assert result.status_code == 422
    assert result.json["errors"][0]["loc"] == ["tenant_id"]
    assert runtime.store.invocations.counts_by_status() == {}
    # And the invocation belongs to the key's tenant
    result = invoke(client, headers, "echo", {"message": "x"})
    assert result.status_code == 202
    assert result.json["tenant_id"] == tenant


def test_a_tenant_key_naming_another_tenant_is_403(client, headers_for, tenant, make_tenant):
    other = make_tenant()
    headers = headers_for(tenant, "invoke,read,manage", **{"X-Tenant-ID": other})
    assert_problem(client.simulate_get("/v1/invocations", headers=headers), 403, "tenant-forbidden")
    assert_problem(invoke(client, headers, "echo", {"message": "x"}), 403, "tenant-forbidden")
    # Naming its own tenant is fine
    own = headers_for(tenant, "invoke,read", **{"X-Tenant-ID": tenant})
    assert client.simulate_get("/v1/invocations", headers=own).status_code == 200


def test_an_operator_key_naming_an_unknown_tenant_is_404(client, headers_for, tenant):
    headers = headers_for(tenant, "admin", **{"X-Tenant-ID": "no-such-tenant"})
    assert_problem(client.simulate_get("/v1/invocations", headers=headers), 404, "tenant-not-found")


def test_an_operator_key_has_every_scope_and_acts_for_the_tenant_it_names(
    client, runtime, headers_for, make_tenant
):
    first, customer = make_tenant(), make_tenant()
    operator = runtime.tenants.create_operator_key("admin").secret
    admin = {"Authorization": f"Bearer {operator}"}
    # It belongs to no tenant: a write that names none is refused, and nothing is stored
    assert_problem(invoke(client, admin, "echo", {"message": "nobody's"}), 403, "tenant-required")
    # With X-Tenant-ID it acts for that tenant
    mine = invoke(client, {**admin, "X-Tenant-ID": first}, "echo", {"message": "first"})
    assert mine.status_code == 202 and mine.json["tenant_id"] == first
    theirs = invoke(client, {**admin, "X-Tenant-ID": customer}, "echo", {"message": "theirs"})
    assert theirs.status_code == 202 and theirs.json["tenant_id"] == customer
    # Reads without X-Tenant-ID see every tenant; with it, that tenant only
    listed = client.simulate_get("/v1/invocations", headers=admin).json["invocations"]
    assert {i["id"] for i in listed} == {mine.json["id"], theirs.json["id"]}
    scoped = client.simulate_get("/v1/invocations", headers={**admin, "X-Tenant-ID": customer})
    assert [i["id"] for i in scoped.json["invocations"]] == [theirs.json["id"]]
    read = client.simulate_get(f"/v1/invocations/{theirs.json['id']}", headers=admin)
    assert read.status_code == 200 and read.json["tenant_id"] == customer
    # Cancel is a write: it needs X-Tenant-ID, and the tenant it names
    cancel_path = f"/v1/invocations/{theirs.json['id']}/cancel"
    assert_problem(client.simulate_post(cancel_path, headers=admin), 403, "tenant-required")
    wrong = client.simulate_post(cancel_path, headers={**admin, "X-Tenant-ID": first})
    assert_problem(wrong, 404)
    cancelled = client.simulate_post(cancel_path, headers={**admin, "X-Tenant-ID": customer})
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"


def test_admin_is_an_operator_keys_alone(client, runtime, tenant):
    # Creating a tenant's key with admin is refused, saying what to do instead
    with pytest.raises(RequestRejected, match="--operator"):
        runtime.tenants.create_key(tenant, "invoke,admin")
    # And an operator key needs admin
    with pytest.raises(RequestRejected, match="admin scope"):
        runtime.tenants.create_operator_key("read")
    # A tenant's admin key made before operator keys existed is refused when presented
    legacy = legacy_admin_key(runtime, tenant)
    result = client.simulate_get("/v1/invocations", headers={"Authorization": f"Bearer {legacy}"})
    assert_problem(result, 401, "unauthenticated")
    states = {runtime.tenants.key_state(k) for k in runtime.tenants.list_keys(tenant)}
    assert states == {"refused"}


def legacy_admin_key(runtime, tenant_id: str) -> str:
    """A tenant's key with admin, written as a store from before operator keys held it."""
    key_id, secret = "0123456789ab", "S" * 43
    with runtime.store.db.engine.begin() as conn:
        conn.execute(
            sa.insert(ApiKey.__table__).values(
                id=key_id,
                tenant_id=tenant_id,
                name="old admin",
                secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
                scopes="admin",
                created_at=datetime.now(UTC),
            )
        )
    return f"fy_{key_id}_{secret}"


@pytest.mark.parametrize("scopes", ["invoke", "read", "manage", "invoke,read,manage"])
def test_a_suspended_tenants_keys_are_refused_on_every_route(
    client, runtime, headers_for, tenant, scopes
):
    # Given an invocation of a tenant and a key of it that worked
    first = invoke(client, headers_for(tenant), "echo", {"message": "before"}).json
    headers = headers_for(tenant, scopes)
    assert client.simulate_get("/v1/functions", headers=headers).status_code in (200, 403)
    # When the tenant is suspended
    runtime.tenants.suspend(tenant)
    # Then every route refuses the key at once, whatever its scope, and nothing is stored
    for method, path, _scope in SCOPED_ROUTES:
        assert_problem(call(client, method, path, headers, first["id"]), 403, "tenant-suspended")
    assert [i.id for i in runtime.invocations.list(tenant).invocations] == [first["id"]]
    # And once it is resumed, the key works again
    runtime.tenants.resume(tenant)
    assert client.simulate_get("/v1/invocations", headers=headers).status_code in (200, 403)


def test_an_operator_reads_a_suspended_tenant_but_runs_nothing_for_it(
    client, runtime, headers_for, tenant
):
    first = invoke(client, headers_for(tenant), "echo", {"message": "before"}).json
    runtime.tenants.suspend(tenant)
    operator = headers_for(tenant, "admin", **{"X-Tenant-ID": tenant})
    one = client.simulate_get(f"/v1/invocations/{first['id']}", headers=operator)
    assert one.status_code == 200
    refused = invoke(client, operator, "echo", {"message": "after"})
    assert_problem(refused, 403, "tenant-suspended")


def test_another_tenants_invocation_is_404_exactly_like_a_missing_one(
    client, headers_for, make_tenant
):
    # Given tenant A's invocation, and a key of tenant B with every non-admin scope
    tenant_a, tenant_b = make_tenant(), make_tenant()
    a_headers, b_headers = headers_for(tenant_a), headers_for(tenant_b)
    mine = invoke(client, a_headers, "echo", {"message": "a's"}).json["id"]
    missing = "00000000-0000-0000-0000-000000000000"
    for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry")):
        # When B reads, cancels or retries it
        theirs = client.simulate_request(
            method, f"/v1/invocations/{mine}{suffix}", headers=b_headers
        )
        absent = client.simulate_request(
            method, f"/v1/invocations/{missing}{suffix}", headers=b_headers
        )
        # Then B gets the 404 a missing invocation gets
        got, expected = assert_problem(theirs, 404), assert_problem(absent, 404)
        assert got["type"] == expected["type"] == "urn:ferry:problem:invocation-not-found"
        assert got["title"] == expected["title"]
        assert got["detail"] == expected["detail"].replace(missing, mine)
    # B never sees it in a list, with any filter
    for query in ("", "?function=echo", "?status=queued"):
        listed = client.simulate_get(f"/v1/invocations{query}", headers=b_headers).json
        assert listed["invocations"] == []
    # And A's invocation was not touched
    still = client.simulate_get(f"/v1/invocations/{mine}", headers=a_headers).json
    assert still["status"] == "queued"
