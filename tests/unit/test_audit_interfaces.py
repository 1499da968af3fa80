"""The audit trail of the dashboard's and the CLI's actions, and their views of it.

Each dashboard action and each `ferry` command that changes something makes exactly one
record with its actor (the signed-in key; the OS user) and request id (the gateway's
X-Request-ID; a new one per command). Both backends.
"""

from __future__ import annotations

import dataclasses
import getpass
import io
import json
import re
import uuid

import falcon.testing
import pytest
import sqlalchemy as sa

from runtime import cli
from runtime.store import audit as audit_store
from runtime.store import models
from runtime.store.tenants import parse_scopes
from tests.unit.test_dashboard import Browser, build_app, csrf_of

SCHEDULE = "cleanup-expired-keys"


def records(runtime) -> list:
    """Every record, oldest first."""
    views, _ = runtime.store.audit.list(None, audit_store.AuditFilter(), limit=200)
    return list(reversed(views))


class Dashboard:
    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.app = build_app(runtime)

    def signed_in(self, tenant: str | None, scopes: str) -> tuple[Browser, str]:
        """A browser signed in with a new key; and the key's id."""
        view, key = self.runtime.store.tenants.create_key(tenant, parse_scopes(scopes))
        browser = Browser(falcon.testing.TestClient(self.app))
        assert browser.login(key).status_code == 303
        return browser, view.id

    def later(self, tenant: str) -> str:
        accepted = self.runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "hi"}, delay_s=3600
        )
        return accepted.invocation.id


@pytest.fixture
def dash(runtime) -> Dashboard:
    for tenant in ("t-a", "t-b"):
        runtime.store.tenants.create(tenant)
    return Dashboard(runtime)


def act(browser: Browser, page: str, action: str, form=None) -> str:
    """POST a dashboard form under a request id of our choosing; the request id."""
    request_id = f"dash-{uuid.uuid4().hex[:12]}"
    token = csrf_of(browser.get(page).text)
    result = browser.post(
        action, [("csrf_token", token), *(form or [])], headers={"X-Request-ID": request_id}
    )
    assert result.status_code == 303, result.text
    assert result.headers["x-request-id"] == request_id
    return request_id


def test_dashboard_invocation_actions_make_one_record_each(dash, runtime):
    browser, key_id = dash.signed_in("t-a", "read,manage")
    one, two = dash.later("t-a"), dash.later("t-a")
    page = f"/dashboard/invocations/{one}"
    cancelled = act(browser, page, f"{page}/cancel")
    retried = act(browser, page, f"{page}/retry")
    # A bulk retry of two failed invocations (and one that is not failed)
    with runtime.store.db.engine.begin() as conn:
        conn.execute(
            sa.update(models.Invocation)
            .where(models.Invocation.id.in_([one, two]))
            .values(status="failed")
        )
    bulk = act(browser, "/dashboard/failed", "/dashboard/failed/retry", [("id", one), ("id", two)])
    got = records(runtime)
    assert [(r.action, r.target, r.request_id, r.detail) for r in got] == [
        ("invocation.cancel", one, cancelled, None),
        ("invocation.retry", one, retried, None),
        ("invocation.retry", one, bulk, {"bulk": True}),
        ("invocation.retry", two, bulk, {"bulk": True}),
    ]
    assert {(r.actor_kind, r.actor_id, r.tenant_id) for r in got} == {("key", key_id, "t-a")}
    # A refused action (already queued) and another tenant's invocation record nothing
    token = csrf_of(browser.get(page).text)
    assert browser.post(f"{page}/retry", {"csrf_token": token}).status_code == 409
    other = dash.later("t-b")
    assert (
        browser.post(f"/dashboard/invocations/{other}/cancel", {"csrf_token": token}).status_code
        == 404
    )
    assert len(records(runtime)) == 4


def test_dashboard_schedule_actions_make_one_record_each(dash, runtime):
    browser, key_id = dash.signed_in(None, "admin")
    page = f"/dashboard/schedules/{SCHEDULE}"
    paused = act(browser, page, f"{page}/pause")
    resumed = act(browser, page, f"{page}/resume")
    html = browser.get(page).text
    trigger_token = re.search(r'name="token" value="([^"]+)"', html).group(1)
    triggered = act(browser, page, f"{page}/trigger", [("token", trigger_token)])
    got = records(runtime)
    assert [(r.action, r.request_id) for r in got] == [
        ("schedule.pause", paused),
        ("schedule.resume", resumed),
        ("schedule.trigger", triggered),
    ]
    assert {(r.actor_kind, r.actor_id, r.target) for r in got} == {("operator", key_id, SCHEDULE)}


def test_the_dashboard_audit_page_shows_a_tenant_its_own_records(dash, runtime):
    a, a_key = dash.signed_in("t-a", "read,manage")
    b, _b_key = dash.signed_in("t-b", "read,manage")
    for browser, tenant in ((a, "t-a"), (b, "t-b")):
        invocation = dash.later(tenant)
        page = f"/dashboard/invocations/{invocation}"
        act(browser, page, f"{page}/cancel")
    [mine] = [r for r in records(runtime) if r.tenant_id == "t-a"]
    [theirs] = [r for r in records(runtime) if r.tenant_id == "t-b"]

    html = a.get("/dashboard/audit").text
    assert mine.target in html and mine.request_id in html and a_key in html
    assert theirs.target not in html and theirs.request_id not in html
    assert 'href="/dashboard/audit' in a.get("/dashboard").text  # in the navigation
    assert mine.target not in a.get("/dashboard/audit?action=schedule.pause").text
    # An operator sees both, or one tenant's
    admin, _ = dash.signed_in(None, "admin")
    html = admin.get("/dashboard/audit").text
    assert mine.target in html and theirs.target in html
    html = admin.get("/dashboard/audit?tenant=t-b").text
    assert mine.target not in html and theirs.target in html
    # A read-only key is refused, and not shown the link
    reader, _ = dash.signed_in("t-a", "read")
    assert reader.get("/dashboard/audit").status_code == 403
    assert 'href="/dashboard/audit' not in reader.get("/dashboard").text


def test_dashboard_audit_pages(dash, runtime):
    browser, _ = dash.signed_in("t-a", "read,manage")
    for _ in range(3):
        invocation = dash.later("t-a")
        page = f"/dashboard/invocations/{invocation}"
        act(browser, page, f"{page}/cancel")
    first = browser.get("/dashboard/audit?limit=2").text
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = browser.get(older).text
    targets = [r.target for r in records(runtime)]
    assert targets[2] in first and targets[1] in first and targets[0] not in first
    assert targets[0] in second and 'rel="next"' not in second


# --- the CLI ----------------------------------------------------------------------------------


def ferry(runtime, capsys, *argv: str) -> str:
    """Run a `ferry` command on the runtime's settings; what it printed."""
    capsys.readouterr()
    args = cli.build_parser().parse_args(list(argv))
    assert args.run(args, runtime.settings) == 0
    return capsys.readouterr().out


def test_cli_changes_make_one_record_each_with_the_os_user(runtime, capsys):
    ran = [
        (("tenants", "create", "t-cli"), "tenant.create", "t-cli"),
        (("tenants", "suspend", "t-cli"), "tenant.suspend", "t-cli"),
        (("tenants", "resume", "t-cli"), "tenant.resume", "t-cli"),
        (("tenants", "set-retention", "t-cli", "--failed", "60"), "tenant.set_retention", "t-cli"),
        (("keys", "create", "--tenant", "t-cli", "--scopes", "read"), "key.create", None),
        (("keys", "create", "--operator", "--scopes", "admin"), "key.create", None),
        (("schedules", "pause", SCHEDULE), "schedule.pause", SCHEDULE),
        (("schedules", "resume", SCHEDULE), "schedule.resume", SCHEDULE),
        (("schedules", "trigger", SCHEDULE), "schedule.trigger", SCHEDULE),
        (("schedules", "delete", SCHEDULE), "schedule.delete", SCHEDULE),
        (("schedules", "restore"), "schedule.restore", "*"),
    ]
    for argv, _action, _target in ran:
        ferry(runtime, capsys, *argv)
    keys = runtime.store.tenants.list_keys()
    ferry(runtime, capsys, "keys", "revoke", keys[0].id)
    # A refused command records nothing
    args = cli.build_parser().parse_args(["tenants", "suspend", "nobody"])
    with pytest.raises(Exception, match="nobody"):
        args.run(args, runtime.settings)

    got = records(runtime)
    assert [r.action for r in got] == [action for _, action, _ in ran] + ["key.revoke"]
    assert {(r.actor_kind, r.actor_id) for r in got} == {("cli", getpass.getuser())}
    # Each command has its own request id
    assert len({r.request_id for r in got}) == len(got)
    assert all(re.fullmatch(r"[0-9a-f]{32}", r.request_id) for r in got)
    for record, (_argv, _action, target) in zip(got, ran, strict=False):
        if target is not None:
            assert record.target == target
    tenant_key, operator_key = got[4], got[5]
    assert (tenant_key.tenant_id, tenant_key.target) == ("t-cli", keys[0].id)
    assert tenant_key.detail == {"scopes": ["read"], "name": ""}
    assert (operator_key.tenant_id, operator_key.target) == (None, keys[1].id)
    assert (got[-1].target, got[-1].tenant_id) == (keys[0].id, "t-cli")
    # The trigger's invocations carry the command's request id too
    triggered = runtime.store.invocations.list(None)[0]
    assert {i.request_id for i in triggered} == {got[8].request_id}


def test_ferry_audit_list(runtime, capsys):
    ferry(runtime, capsys, "tenants", "create", "t-one")
    ferry(runtime, capsys, "tenants", "create", "t-two")
    ferry(runtime, capsys, "schedules", "pause", SCHEDULE)
    listed = json.loads(ferry(runtime, capsys, "audit", "list", "--json"))
    assert [r["action"] for r in listed["records"]] == [
        "schedule.pause",
        "tenant.create",
        "tenant.create",
    ]
    assert listed["next_cursor"] is None
    one = json.loads(ferry(runtime, capsys, "audit", "list", "--tenant", "t-one", "--json"))
    assert [r["target"] for r in one["records"]] == ["t-one"]
    page = json.loads(ferry(runtime, capsys, "audit", "list", "--limit", "2", "--json"))
    rest = json.loads(
        ferry(runtime, capsys, "audit", "list", "--cursor", page["next_cursor"], "--json")
    )
    assert [r["id"] for r in page["records"] + rest["records"]] == [
        r["id"] for r in listed["records"]
    ]
    table = ferry(runtime, capsys, "audit", "list", "--action", "tenant.create")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["AT", "TENANT_ID", "ACTOR_KIND"]
    assert len(lines) == 3 and all("tenant.create" in line for line in lines[1:])


def test_secret_changes_over_the_api_and_the_cli_make_one_record_each(runtime, capsys, monkeypatch):
    # Given a tenant and its manage key
    runtime.store.tenants.create("t-sec")
    view, key = runtime.store.tenants.create_key("t-sec", parse_scopes("read,manage"))
    client = falcon.testing.TestClient(build_app(runtime))
    value = "crm-token-" + uuid.uuid4().hex

    def over_api(method: str, path: str, **kwargs) -> str:
        request_id = f"api-{uuid.uuid4().hex[:12]}"
        headers = {"Authorization": f"Bearer {key}", "X-Request-ID": request_id}
        result = client.simulate_request(method, path, headers=headers, **kwargs)
        assert result.status_code in (200, 204), result.text
        return request_id

    # When the key sets, deletes and rotates over the API, a missing secret's delete is
    # refused, and the CLI sets one and re-encrypts everything
    api_ids = [
        over_api("PUT", "/v1/secrets/crm_token", json={"value": value}),
        over_api("DELETE", "/v1/secrets/crm_token"),
        over_api("POST", "/v1/webhook-secret/rotate"),
    ]
    refused = client.simulate_delete(
        "/v1/secrets/crm_token", headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 404
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    ferry(runtime, capsys, "secrets", "set", "--tenant", "t-sec", "crm_token")
    ferry(runtime, capsys, "secrets", "rotate")

    # Then one record per change, with its actor and request id, and never the value
    got = records(runtime)
    assert [(r.action, r.target, r.tenant_id) for r in got] == [
        ("secret.set", "crm_token", "t-sec"),
        ("secret.delete", "crm_token", "t-sec"),
        ("secret.rotate_webhook", "webhook", "t-sec"),
        ("secret.set", "crm_token", "t-sec"),
        ("secret.rotate_encryption", "*", None),
    ]
    assert [r.request_id for r in got[:3]] == api_ids
    assert {(r.actor_kind, r.actor_id) for r in got[:3]} == {("key", view.id)}
    assert {(r.actor_kind, r.actor_id) for r in got[3:]} == {("cli", getpass.getuser())}
    assert value not in json.dumps([dataclasses.asdict(r) for r in got], default=str)


def test_limit_changes_over_the_api_and_the_cli_make_one_record_each(runtime, capsys):
    # Given an operator key and a tenant
    runtime.store.tenants.create("t-lim")
    view, key = runtime.store.tenants.create_key(None, parse_scopes("admin"))
    client = falcon.testing.TestClient(build_app(runtime))
    url = "/v1/tenants/t-lim/limits"
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "req-limits-1"}
    # When the operator replaces its limits, an unknown tenant's are refused, and the CLI
    # sets one
    assert client.simulate_put(url, json={"rate_per_s": 5}, headers=headers).status_code == 200
    refused = client.simulate_put("/v1/tenants/nobody/limits", json={}, headers=headers)
    assert refused.status_code == 404
    ferry(runtime, capsys, "tenants", "set-limits", "t-lim", "--concurrency", "3")
    # Then one record each, for the tenant, with the values set
    got = [r for r in records(runtime) if r.action == "tenant.set_limits"]
    assert [(r.tenant_id, r.target, r.actor_kind) for r in got] == [
        ("t-lim", "t-lim", "operator"),
        ("t-lim", "t-lim", "cli"),
    ]
    assert (got[0].actor_id, got[0].request_id) == (view.id, "req-limits-1")
    assert got[0].detail is not None and got[0].detail["rate_per_s"] == 5
    assert got[1].detail == {"concurrency": 3}
