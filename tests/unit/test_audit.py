"""The audit trail over the API: one record per action, who sees which, paging, retention.

Each test runs on the embedded backend and on real PostgreSQL and Redis. The schedules
under test are the shipped ones (`schedules/`).
"""

from __future__ import annotations

import ast
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from falcon.testing import TestClient

from gateway.app import create_app
from runtime.recovery.retention import RetentionSweep
from runtime.services.audit import Actor
from runtime.store import audit as audit_store
from runtime.store.retention import RetentionPolicy
from runtime.store.tenants import parse_scopes
from tests.unit.conftest import assert_problem, invoke

REPO = Path(__file__).resolve().parents[2]
SCHEDULE = "cleanup-expired-keys"


class Api:
    """A client over the gateway, and keys that remember their ids."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.client = TestClient(create_app(runtime))
        self.key_ids: dict[str, str] = {}

    def key(self, tenant: str | None, scopes: str) -> dict[str, str]:
        wanted = parse_scopes(scopes)
        view, key = self.runtime.store.tenants.create_key(tenant, wanted)
        headers = {"Authorization": f"Bearer {key}"}
        self.key_ids[headers["Authorization"]] = view.id
        return headers

    def key_id(self, headers: dict[str, str]) -> str:
        return self.key_ids[headers["Authorization"]]

    def post(self, path: str, headers: dict[str, str], request_id: str, **kwargs):
        return self.client.simulate_post(
            path, headers={**headers, "X-Request-ID": request_id}, **kwargs
        )

    def audit(self, headers: dict[str, str], **query: str):
        result = self.client.simulate_get("/v1/audit", headers=headers, params=query)
        assert result.status_code == 200, result.text
        return result.json

    def later(self, tenant_headers: dict[str, str]) -> str:
        """A new invocation that runs in an hour (so it can be cancelled); its id."""
        result = invoke(self.client, tenant_headers, "echo", {"message": "hi"}, delay=3600)
        assert result.status_code == 202, result.text
        return str(result.json["id"])


@pytest.fixture
def api(runtime) -> Api:
    for tenant in ("t-a", "t-b"):
        runtime.store.tenants.create(tenant)
    return Api(runtime)


def records(runtime, **where) -> list:
    views, _ = runtime.store.audit.list(None, audit_store.AuditFilter(**where), limit=200)
    return views


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


# --- each action over the API: exactly one record, the right actor and request id ------------


def test_cancel_and_retry_over_the_api_record_the_key_and_the_request_id(api, runtime):
    # Given a tenant's manage key and an invocation due in an hour
    a = api.key("t-a", "invoke,read,manage")
    invocation_id = api.later(a)
    # When it is cancelled, then retried, each under its own request id
    cancel_id, retry_id = new_request_id(), new_request_id()
    assert api.post(f"/v1/invocations/{invocation_id}/cancel", a, cancel_id).status_code == 200
    assert api.post(f"/v1/invocations/{invocation_id}/retry", a, retry_id).status_code == 202
    # Then there is one record of each, newest first, naming the key and the request
    got = records(runtime)
    assert [(r.action, r.request_id) for r in got] == [
        ("invocation.retry", retry_id),
        ("invocation.cancel", cancel_id),
    ]
    for record in got:
        assert record.actor_kind == "key" and record.actor_id == api.key_id(a)
        assert record.tenant_id == "t-a" and record.target == invocation_id
        assert record.detail is None


def test_schedule_actions_over_the_api_record_the_operator_key(api, runtime):
    operator = api.key(None, "admin")
    acted = []
    for method, path, status, action in (
        ("post", f"/v1/schedules/{SCHEDULE}/pause", 200, "schedule.pause"),
        ("post", f"/v1/schedules/{SCHEDULE}/resume", 200, "schedule.resume"),
        ("post", f"/v1/schedules/{SCHEDULE}/trigger", 202, "schedule.trigger"),
        ("delete", f"/v1/schedules/{SCHEDULE}", 204, "schedule.delete"),
        ("post", "/v1/schedules/restore", 200, "schedule.restore"),
    ):
        request_id = new_request_id()
        headers = {**operator, "X-Request-ID": request_id}
        result = api.client.simulate_request(method.upper(), path, headers=headers)
        assert result.status_code == status, result.text
        acted.append((action, request_id))
    got = list(reversed(records(runtime)))
    assert [(r.action, r.request_id) for r in got] == acted
    assert {(r.actor_kind, r.actor_id, r.tenant_id) for r in got} == {
        ("operator", api.key_id(operator), None)
    }
    assert [r.target for r in got] == [SCHEDULE] * 4 + ["*"]
    # The trigger names what it made; the restore, what it brought back
    triggered = runtime.store.invocations.list(None)[0]
    assert sorted(got[2].detail["invocations"]) == sorted(i.id for i in triggered)
    assert got[4].detail == {"restored": [SCHEDULE]}


def test_an_operator_acting_for_a_tenant_is_recorded_for_that_tenant(api, runtime):
    a = api.key("t-a", "invoke,read")
    invocation_id = api.later(a)
    operator = {**api.key(None, "admin"), "X-Tenant-ID": "t-a"}
    request_id = new_request_id()
    assert (
        api.post(f"/v1/invocations/{invocation_id}/cancel", operator, request_id).status_code == 200
    )
    [record] = records(runtime)
    assert (record.actor_kind, record.actor_id) == ("operator", api.key_id(operator))
    assert (record.tenant_id, record.request_id) == ("t-a", request_id)


def test_a_refused_or_failed_action_records_nothing(api, runtime):
    a, b = api.key("t-a", "invoke,read,manage"), api.key("t-b", "invoke,read,manage")
    reader = api.key("t-a", "invoke,read")
    operator = api.key(None, "admin")
    invocation_id = api.later(a)
    rid = new_request_id()
    # Another tenant's invocation: 404; a key without manage: 403
    assert_problem(api.post(f"/v1/invocations/{invocation_id}/cancel", b, rid), 404)
    assert_problem(api.post(f"/v1/invocations/{invocation_id}/cancel", reader, rid), 403)
    # A queued invocation cannot be retried: 409
    assert_problem(api.post(f"/v1/invocations/{invocation_id}/retry", a, rid), 409)
    # Schedules: a tenant key lacks admin, an unknown schedule is 404
    assert_problem(api.post(f"/v1/schedules/{SCHEDULE}/pause", a, rid), 403)
    assert_problem(api.post("/v1/schedules/nope/pause", operator, rid), 404)
    assert_problem(api.post("/v1/schedules/nope/trigger", operator, rid), 404)
    assert records(runtime) == []
    # A second cancel of the same invocation is refused and adds nothing to the first's record
    assert api.post(f"/v1/invocations/{invocation_id}/cancel", a, rid).status_code == 200
    assert_problem(api.post(f"/v1/invocations/{invocation_id}/cancel", a, rid), 409)
    assert [r.action for r in records(runtime)] == ["invocation.cancel"]


def test_a_change_whose_record_cannot_be_written_is_not_made(api, runtime, monkeypatch):
    # Given appending a record fails
    a = api.key("t-a", "invoke,read,manage")
    invocation_id = api.later(a)

    def broken(*args, **kwargs):
        raise RuntimeError("the audit table is gone")

    monkeypatch.setattr("runtime.store.invocations.append_in", broken)
    # When the invocation is cancelled
    with pytest.raises(RuntimeError):
        runtime.invocations.cancel(invocation_id, "t-a", actor=Actor.cli("ops", "r-1"))
    # Then the cancel was rolled back with it
    assert runtime.store.invocations.get(invocation_id).status == "scheduled"


# --- reading: who sees which records, filters, paging -----------------------------------------


def test_a_tenant_key_sees_its_tenants_records_only(api, runtime):
    a, b = api.key("t-a", "invoke,read,manage"), api.key("t-b", "invoke,read,manage")
    for headers in (a, b):
        invocation_id = api.later(headers)
        api.post(f"/v1/invocations/{invocation_id}/cancel", headers, new_request_id())
    operator = api.key(None, "admin")
    api.post(f"/v1/schedules/{SCHEDULE}/pause", operator, new_request_id())

    assert {r["tenant_id"] for r in api.audit(a)["records"]} == {"t-a"}
    assert {r["tenant_id"] for r in api.audit(b)["records"]} == {"t-b"}
    assert [r["actor_id"] for r in api.audit(a)["records"]] == [api.key_id(a)]
    # An operator sees every tenant's, and the records of no tenant; or one tenant's
    assert {r["tenant_id"] for r in api.audit(operator)["records"]} == {"t-a", "t-b", None}
    scoped = {**operator, "X-Tenant-ID": "t-b"}
    assert {r["tenant_id"] for r in api.audit(scoped)["records"]} == {"t-b"}
    # Reading the trail needs manage; a tenant key cannot name another tenant
    reader = api.key("t-a", "invoke,read")
    assert_problem(api.client.simulate_get("/v1/audit", headers=reader), 403, "scope-missing")
    other = {**a, "X-Tenant-ID": "t-b"}
    assert_problem(api.client.simulate_get("/v1/audit", headers=other), 403)


def test_filters_and_pages(api, runtime):
    a = api.key("t-a", "invoke,read,manage")
    ids = [api.later(a) for _ in range(5)]
    for invocation_id in ids:
        api.post(f"/v1/invocations/{invocation_id}/cancel", a, new_request_id())
    api.post(f"/v1/invocations/{ids[0]}/retry", a, new_request_id())

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = api.audit(a, **query)
        seen += page["records"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 6 and len({r["id"] for r in seen}) == 6
    assert [r["at"] for r in seen] == sorted((r["at"] for r in seen), reverse=True)
    assert seen[0]["action"] == "invocation.retry"

    assert len(api.audit(a, action="invocation.cancel")["records"]) == 5
    assert [r["action"] for r in api.audit(a, target=ids[0])["records"]] == [
        "invocation.retry",
        "invocation.cancel",
    ]
    assert len(api.audit(a, actor=api.key_id(a))["records"]) == 6
    assert api.audit(a, actor="someone-else")["records"] == []
    first = seen[-1]["at"]
    assert len(api.audit(a, since=first)["records"]) == 6
    assert api.audit(a, until=first)["records"] == []
    assert_problem(api.client.simulate_get("/v1/audit?cursor=nope!", headers=a), 400)
    assert_problem(api.client.simulate_get("/v1/audit?since=yesterday", headers=a), 400)
    assert_problem(api.client.simulate_get("/v1/audit?limit=0", headers=a), 400)


def test_no_route_changes_or_removes_a_record(api, runtime):
    a = api.key("t-a", "invoke,read,manage")
    operator = api.key(None, "admin")
    api.post(f"/v1/invocations/{api.later(a)}/cancel", a, new_request_id())
    [record] = records(runtime)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/v1/audit", f"/v1/audit/{record.id}"):
            result = api.client.simulate_request(method, path, headers=operator)
            assert result.status_code in (404, 405), (method, path)
    assert records(runtime) == [record]


# --- retention and append-only ----------------------------------------------------------------


def test_retention_removes_records_older_than_the_setting_only(runtime):
    # Given two records, one appended a year and a day ago
    store = runtime.store
    now = store.db.clock()
    actor = Actor.cli("ops", "r-1")
    store.db.clock = lambda: now - timedelta(days=366)
    store.audit.append(actor.entry("tenant.create", tenant_id="t-old", target="t-old"))
    store.db.clock = lambda: now
    store.audit.append(actor.entry("tenant.create", tenant_id="t-new", target="t-new"))
    policy = RetentionPolicy.from_settings(runtime.settings)
    # When a sweep keeps them forever (0), nothing goes
    RetentionSweep(store, policy, interval_s=0, batch_size=1, audit_s=0)()
    assert len(records(runtime)) == 2
    # When the sweep runs with the default (a year), batch by batch
    assert runtime.settings.retention_audit_s == 365 * 86_400
    sweep = RetentionSweep.from_settings(store, runtime.settings)
    sweep.batch_size = 1
    sweep()
    # Then only the old one is gone
    assert [r.tenant_id for r in records(runtime)] == ["t-new"]


def _audit_writers(source: str) -> list[str]:
    """Functions in `source` whose body names the audit table and deletes or updates."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = ast.unparse(node)
            names_audit = "AuditRecord" in body or "_AUDIT" in body or "audit_records" in body
            if names_audit and any(w in body for w in ("delete(", "update(", "DELETE", "UPDATE")):
                found.append(node.name)
    return found


def test_the_only_statement_that_removes_audit_records_is_retentions():
    writers = {}
    for path in sorted([*REPO.glob("runtime/**/*.py"), *REPO.glob("gateway/**/*.py")]):
        if "migrations" in path.parts:
            continue
        found = _audit_writers(path.read_text())
        if found:
            writers[str(path.relative_to(REPO))] = found
    assert writers == {"runtime/store/retention.py": ["remove_audit"]}
    # And the check finds such a function where there is one
    assert _audit_writers("def f():\n    sa.delete(access_models.AuditRecord)\n") == ["f"]


def test_the_database_refuses_to_change_a_record(runtime):
    # Given a record
    runtime.store.audit.append(
        Actor.cli("ops", "r-1").entry("tenant.create", tenant_id="t", target="t")
    )
    # When anyone, with plain SQL, tries to rewrite it, the store refuses
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with runtime.store.db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_records SET actor_id = 'someone-else'"))
    assert [r.actor_id for r in records(runtime)] == ["ops"]
