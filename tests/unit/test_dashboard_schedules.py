"""The Schedules pages: next runs and history, and an admin's pause, resume and trigger.

The schedules under test are declared here (FERRY_SCHEDULES_MODULE points at this
module), on embedded and production backends.
"""

from __future__ import annotations

import re

import falcon.testing
import pytest

from runtime.scheduling import ALL_ACTIVE, schedule
from runtime.store.tenants import parse_scopes
from tests.unit.test_dashboard import Browser, build_app, csrf_of

#: `echo_open` takes this input's unknown field, which the pages must not show.
ECHO = {"message": "scheduled", "api_token": "sched-secret-token"}

alpha_daily = schedule(
    "alpha-daily", cron="0 6 * * *", function="echo_open", input=ECHO, tenant="t-alpha"
)
beta_daily = schedule(
    "beta-daily", cron="0 6 * * *", function="echo_open", input=ECHO, tenant="t-beta"
)
everyone = schedule(
    "everyone", cron="*/5 * * * *", function="echo_open", input=ECHO, tenant=ALL_ACTIVE
)


@pytest.fixture
def dash(runtime_with):
    runtime = runtime_with(schedules_module=__name__)
    for tenant in ("t-alpha", "t-beta", "t-ops"):
        runtime.store.tenants.create(tenant)
    app = build_app(runtime)

    def signed_in(tenant: str, scopes: str) -> Browser:
        wanted = parse_scopes(scopes)
        # `admin` is an operator key's, which belongs to no tenant.
        owner = None if "admin" in wanted else tenant
        _view, key = runtime.store.tenants.create_key(owner, wanted)
        b = Browser(falcon.testing.TestClient(app))
        assert b.login(key).status_code == 303
        return b

    return runtime, signed_in


def schedule_ids(html: str) -> list[str]:
    return re.findall(r'<a href="/dashboard/schedules/([a-z-]+)[^"]*">', html)


def form_value(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', html).group(1)


def test_a_tenant_sees_the_schedules_that_run_in_it_and_cannot_change_them(dash):
    runtime, signed_in = dash
    alpha = signed_in("t-alpha", "read,manage")
    listing = alpha.get("/dashboard/schedules")
    assert listing.status_code == 200
    assert schedule_ids(listing.text) == ["alpha-daily", "everyone"]
    assert alpha.get("/dashboard/schedules/beta-daily").status_code == 404
    page = alpha.get("/dashboard/schedules/everyone")
    assert page.status_code == 200 and ">Pause<" not in page.text
    assert "need an admin key" in page.text
    # The input is shown as the API shows it, with secret-looking values hidden
    assert "sched-secret-token" not in page.text and "[redacted]" in page.text
    response = alpha.post("/dashboard/schedules/everyone/pause", {"csrf_token": csrf_of(page.text)})
    assert response.status_code == 403
    assert 'id="state">active<' in alpha.get("/dashboard/schedules/everyone").text
    assert runtime.store.invocations.list(None)[0] == []


def test_an_admin_pauses_resumes_and_triggers_a_schedule(dash):
    runtime, signed_in = dash
    admin = signed_in("t-ops", "admin")
    assert schedule_ids(admin.get("/dashboard/schedules").text) == [
        "alpha-daily",
        "beta-daily",
        "everyone",
    ]
    page = admin.get("/dashboard/schedules/alpha-daily").text
    assert page.count("<li>") == 5  # the next five runs
    # When it pauses the schedule, Then it shows paused with no next run
    response = admin.post("/dashboard/schedules/alpha-daily/pause", {"csrf_token": csrf_of(page)})
    assert response.status_code == 303
    page = admin.get(response.headers["location"]).text
    assert 'id="state">paused<' in page and "None while it is paused." in page
    assert "Paused: it makes no invocations until resumed." in page
    # When it resumes it, Then it is active again
    response = admin.post("/dashboard/schedules/alpha-daily/resume", {"csrf_token": csrf_of(page)})
    page = admin.get(response.headers["location"]).text
    assert 'id="state">active<' in page
    # When it runs it now, twice from the same form, Then it ran once, listed in its history
    form = {"csrf_token": csrf_of(page), "token": form_value(page, "token")}
    first = admin.post("/dashboard/schedules/alpha-daily/trigger", form)
    admin.post("/dashboard/schedules/alpha-daily/trigger", form)
    assert first.status_code == 303
    page = admin.get(first.headers["location"]).text
    assert "Triggered" in page
    listed = set(re.findall(r"/dashboard/invocations/([0-9a-f-]{36})", page))
    assert len(listed) == 1
    [invocation] = listed
    assert runtime.store.invocations.get(invocation).tenant_id == "t-alpha"
    # A trigger without its form token is refused
    response = admin.post("/dashboard/schedules/alpha-daily/trigger", {"csrf_token": csrf_of(page)})
    assert response.status_code == 400


def test_an_admin_filtering_by_a_tenant_triggers_for_that_tenant_alone(dash):
    runtime, signed_in = dash
    admin = signed_in("t-ops", "admin")
    page = admin.get("/dashboard/schedules/everyone?tenant=t-beta").text
    assert "Run now for t-beta" in page
    form = {"csrf_token": csrf_of(page), "token": form_value(page, "token")}
    response = admin.post("/dashboard/schedules/everyone/trigger?tenant=t-beta", form)
    assert response.status_code == 303 and "tenant=t-beta" in response.headers["location"]
    views, _ = runtime.store.invocations.list(None, function="echo_open")
    assert [v.tenant_id for v in views] == ["t-beta"]


def test_schedule_actions_without_the_csrf_token_are_refused(dash):
    runtime, signed_in = dash
    admin = signed_in("t-ops", "admin")
    for action in ("pause", "resume", "trigger"):
        response = admin.post(f"/dashboard/schedules/alpha-daily/{action}", {"token": "x" * 20})
        assert response.status_code == 403, action
    assert 'id="state">active<' in admin.get("/dashboard/schedules/alpha-daily").text
    views, _ = runtime.store.invocations.list(None)
    assert views == []
