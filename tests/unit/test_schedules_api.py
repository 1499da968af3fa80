"""`/v1/schedules` over HTTP: scopes, tenant isolation, problem+json, every route.

The schedules under test are declared in this module (FERRY_SCHEDULES_MODULE points
here); each test runs on the embedded backends and on real PostgreSQL and Redis.
"""

from __future__ import annotations

import pytest
from falcon.testing import TestClient

from gateway import app as gateway_app
from gateway.resources.schedules import add_routes
from runtime.scheduling import ALL_ACTIVE, schedule
from runtime.store.models import TenantStatus
from runtime.store.tenants import parse_scopes
from tests.unit.conftest import assert_problem

ECHO = {"message": "scheduled"}

alpha_report = schedule(
    "alpha-report", cron="0 6 * * *", function="echo", input=ECHO, tenant="t-alpha"
)
beta_report = schedule(
    "beta-report", cron="0 6 * * *", function="echo", input=ECHO, tenant="t-beta"
)
everyone = schedule(
    "everyone",
    cron="*/5 * * * *",
    timezone="Europe/Prague",
    function="echo",
    input=ECHO,
    tenant=ALL_ACTIVE,
    misfire="run_once",
)


class Api:
    """A client over the gateway with the schedule routes, and keys per tenant."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        app = gateway_app.create_app(runtime)
        if "schedules" not in gateway_app.RESOURCE_MODULES:  # until the lead wires it in
            add_routes(app, runtime)
        self.client = TestClient(app)

    def key(self, tenant: str, scopes: str, **headers: str) -> dict[str, str]:
        wanted = parse_scopes(scopes)
        # `admin` is an operator key's, which belongs to no tenant.
        owner = None if "admin" in wanted else tenant
        _view, key = self.runtime.store.tenants.create_key(owner, wanted)
        return {"Authorization": f"Bearer {key}", **headers}

    def get(self, path: str, headers: dict[str, str]):
        return self.client.simulate_get(path, headers=headers)

    def post(self, path: str, headers: dict[str, str]):
        return self.client.simulate_post(path, headers=headers)


@pytest.fixture
def api(runtime_with) -> Api:
    runtime = runtime_with(schedules_module=__name__)
    for tenant in ("t-alpha", "t-beta", "t-ops"):
        runtime.store.tenants.create(tenant)
    return Api(runtime)


@pytest.fixture
def admin(api) -> dict[str, str]:
    return api.key("t-ops", "admin")


def ids(result) -> list[str]:
    return [s["id"] for s in result.json["schedules"]]


def test_the_list_and_one_schedule_in_the_contracts_shape(api, admin):
    listing = api.get("/v1/schedules", admin)
    assert listing.status_code == 200 and listing.headers.get("x-request-id")
    assert ids(listing) == ["alpha-report", "beta-report", "everyone"]
    item = api.get("/v1/schedules/everyone", admin)
    assert item.status_code == 200
    body = item.json
    assert {
        k: body[k]
        for k in (
            "id",
            "function",
            "tenant",
            "each_active_tenant",
            "cron",
            "timezone",
            "misfire",
            "paused",
            "last_run_at",
            "history",
        )
    } == {
        "id": "everyone",
        "function": "echo",
        "tenant": "*",
        "each_active_tenant": True,
        "cron": "*/5 * * * *",
        "timezone": "Europe/Prague",
        "misfire": "run_once",
        "paused": False,
        "last_run_at": None,
        "history": [],
    }
    assert body["input"] == ECHO
    assert len(body["next_run_times"]) == 5 and body["next_run_at"] == body["next_run_times"][0]
    assert all(t.endswith("Z") and ":00.000" in t for t in body["next_run_times"])


def test_without_a_key_401_and_without_the_scope_403(api):
    assert_problem(api.get("/v1/schedules", {}), 401, "unauthenticated")
    invoker = api.key("t-alpha", "invoke")
    assert_problem(api.get("/v1/schedules", invoker), 403, "scope-missing")
    manager = api.key("t-alpha", "invoke,read,manage")
    for action in ("pause", "resume", "trigger"):
        assert_problem(
            api.post(f"/v1/schedules/alpha-report/{action}", manager), 403, "scope-missing"
        )
    assert_problem(
        api.client.simulate_delete("/v1/schedules/alpha-report", headers=manager),
        403,
        "scope-missing",
    )
    assert_problem(api.post("/v1/schedules/restore", manager), 403, "scope-missing")


def test_a_tenant_sees_its_schedules_and_the_each_tenant_ones_not_anothers(api):
    alpha = api.key("t-alpha", "read")
    assert ids(api.get("/v1/schedules", alpha)) == ["alpha-report", "everyone"]
    # Another tenant's schedule answers exactly like a missing one
    theirs = assert_problem(api.get("/v1/schedules/beta-report", alpha), 404, "schedule-not-found")
    missing = assert_problem(api.get("/v1/schedules/nope", alpha), 404, "schedule-not-found")
    assert theirs["title"] == missing["title"]
    # An admin acting for a tenant sees what that tenant sees
    acting = api.key("t-ops", "admin", **{"X-Tenant-ID": "t-beta"})
    assert ids(api.get("/v1/schedules", acting)) == ["beta-report", "everyone"]
    assert_problem(api.post("/v1/schedules/alpha-report/pause", acting), 404)


def test_history_shows_a_tenant_only_its_own_invocations(api, admin):
    # Given an admin triggered the each-tenant schedule for every active tenant
    triggered = api.post("/v1/schedules/everyone/trigger", admin)
    assert triggered.status_code == 202
    made = {i["tenant_id"]: i["id"] for i in triggered.json["invocations"]}
    assert sorted(made) == ["t-alpha", "t-beta", "t-ops"]
    assert "location" not in triggered.headers  # several invocations: no single place

    # Then each tenant's view holds its own run only
    for tenant in ("t-alpha", "t-beta"):
        view = api.get("/v1/schedules/everyone", api.key(tenant, "read")).json
        assert [run["invocation"]["id"] for run in view["history"]] == [made[tenant]]
        assert view["last_invocation_id"] == made[tenant]
        assert view["history"][0]["kind"] == "manual"
        assert view["history"][0]["invocation"]["trigger"] == "schedule"
    # And the admin's holds all three
    assert len(api.get("/v1/schedules/everyone", admin).json["history"]) == 3
    # And another tenant's invocation stays hidden behind the invocations API as well
    alpha = api.key("t-alpha", "read")
    assert_problem(api.get(f"/v1/invocations/{made['t-beta']}", alpha), 404)


def test_trigger_for_one_tenant_with_a_key_is_idempotent(api):
    acting = api.key("t-ops", "admin", **{"X-Tenant-ID": "t-alpha", "Idempotency-Key": "run-1"})
    first = api.post("/v1/schedules/everyone/trigger", acting)
    again = api.post("/v1/schedules/everyone/trigger", acting)
    assert first.status_code == again.status_code == 202
    [invocation] = first.json["invocations"]
    assert invocation["tenant_id"] == "t-alpha"
    assert first.headers["location"] == f"/v1/invocations/{invocation['id']}"
    assert again.json["invocations"][0]["id"] == invocation["id"]
    too_long = {**acting, "Idempotency-Key": "k" * 256}
    assert_problem(api.post("/v1/schedules/everyone/trigger", too_long), 400, "bad-request")


def test_trigger_of_a_suspended_tenants_schedule_is_403(api, admin):
    api.runtime.store.tenants.set_status("t-alpha", TenantStatus.SUSPENDED)
    assert_problem(api.post("/v1/schedules/alpha-report/trigger", admin), 403, "tenant-suspended")


def test_pause_resume_delete_restore(api, admin):
    # Pause: 200, paused, no next run
    paused = api.post("/v1/schedules/alpha-report/pause", admin)
    assert paused.status_code == 200
    assert paused.json["paused"] is True and paused.json["next_run_at"] is None
    assert api.get("/v1/schedules/alpha-report", admin).json["paused"] is True
    # Resume: 200, running again
    resumed = api.post("/v1/schedules/alpha-report/resume", admin)
    assert resumed.status_code == 200 and resumed.json["paused"] is False
    assert resumed.json["next_run_at"] is not None
    # Delete: 204, then gone until restored
    deleted = api.client.simulate_delete("/v1/schedules/alpha-report", headers=admin)
    assert deleted.status_code == 204 and deleted.text == ""
    assert_problem(api.get("/v1/schedules/alpha-report", admin), 404, "schedule-not-found")
    assert "alpha-report" not in ids(api.get("/v1/schedules", admin))
    assert_problem(api.client.simulate_delete("/v1/schedules/alpha-report", headers=admin), 404)
    assert_problem(api.post("/v1/schedules/alpha-report/trigger", admin), 404)
    # Restore: 200, back in the list
    restored = api.post("/v1/schedules/restore", admin)
    assert restored.status_code == 200
    assert restored.json["restored"] == ["alpha-report"]
    assert ids(restored) == ["alpha-report", "beta-report", "everyone"]
    assert api.get("/v1/schedules/alpha-report", admin).status_code == 200


def test_unknown_schedules_and_methods_answer_problem_json(api, admin):
    assert_problem(api.post("/v1/schedules/nope/pause", admin), 404, "schedule-not-found")
    assert_problem(api.client.simulate_put("/v1/schedules/everyone", headers=admin), 405)
    assert_problem(api.get("/v1/schedules/restore", admin), 405)


def test_the_openapi_document_describes_every_route(api):
    document = api.client.simulate_get("/openapi.json").json
    paths = {path: ops for path, ops in document["paths"].items() if "schedules" in path}
    assert set(paths) == {
        "/v1/schedules",
        "/v1/schedules/restore",
        "/v1/schedules/{schedule_id}",
        "/v1/schedules/{schedule_id}/trigger",
        "/v1/schedules/{schedule_id}/pause",
        "/v1/schedules/{schedule_id}/resume",
    }
    assert set(paths["/v1/schedules/{schedule_id}"]) == {"get", "delete"}
    assert "Schedule" in document["components"]["schemas"]
