"""The dashboard's pages and actions, through the real app on embedded and production backends.

The app is built as the lead will wire it: `create_app`, then `add_dashboard_routes` and
`add_metrics`. A small cookie-keeping client signs in through the login form, exactly
as a browser with JavaScript off does.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import falcon.testing
import pytest

from gateway.app import create_app
from gateway.dashboard import add_dashboard_routes
from gateway.metrics import add_metrics
from runtime.app import Runtime
from runtime.errors import StoreUnavailable
from runtime.metrics import process_metrics
from runtime.recovery.heartbeat import Heartbeat, HeartbeatOptions
from runtime.worker.middleware.metrics import MetricsMiddleware
from tests.waiting import finished, wait_for

embedded_only = pytest.mark.parametrize("backend", ["embedded"])
FORM = "application/x-www-form-urlencoded"


class Browser:
    """Keeps cookies like a browser and sends forms urlencoded."""

    def __init__(self, client: falcon.testing.TestClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, Any] | list[tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> falcon.testing.Result:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            headers["Content-Type"] = FORM
            kwargs["body"] = urllib.parse.urlencode(form, doseq=True)
        result = self.client.simulate_request(method, path, headers=headers, **kwargs)
        for name, cookie in result.cookies.items():
            if cookie.value:
                self.cookies[name] = cookie.value
            else:
                self.cookies.pop(name, None)
        return result

    def get(self, path: str, **kwargs: Any) -> falcon.testing.Result:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: Any = None, **kwargs: Any) -> falcon.testing.Result:
        return self.request("POST", path, form=form if form is not None else {}, **kwargs)

    def csrf(self, path: str = "/dashboard") -> str:
        page = self.get(path)
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    def login(self, key: str, next_path: str = "/dashboard") -> falcon.testing.Result:
        token = csrf_of(self.get("/dashboard/login").text)
        return self.post(
            "/dashboard/login", {"csrf_token": token, "api_key": key, "next": next_path}
        )


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def invocation_ids(html: str) -> set[str]:
    return set(re.findall(r'href="/dashboard/invocations/([0-9a-f-]{36})"', html))


def build_app(runtime: Runtime) -> Any:
    """The app with the dashboard and `/metrics`, added here until `create_app` mounts them."""
    app = create_app(runtime)
    if app._router.find("/dashboard") is None:
        add_dashboard_routes(app, runtime)
    if app._router.find("/metrics") is None:
        add_metrics(app, runtime)
    return app


def with_worker_metrics(runtime: Runtime) -> Runtime:
    """Install the metrics middleware on the broker, unless the runtime already does."""
    if not any(isinstance(m, MetricsMiddleware) for m in runtime.broker.middleware):
        runtime.broker.add_middleware(
            MetricsMiddleware(process_metrics(runtime.settings), runtime.store.claims)
        )
    return runtime


def with_heartbeat(runtime: Runtime, handle: Any, **options: float) -> Heartbeat | None:
    """Start the worker's heartbeat, unless `start_worker` already did; stop it when done."""
    if getattr(handle, "heartbeat", None) is not None:
        return None
    heartbeat = Heartbeat(
        runtime.store.workers,
        runtime.worker_id,
        queues=["default", "heavy", "scheduled"],
        threads=runtime.settings.worker_threads,
        options=HeartbeatOptions(**options),
        metrics=process_metrics(runtime.settings),
    )
    heartbeat.start()
    return heartbeat


@pytest.fixture
def browser(runtime: Runtime) -> Callable[[], Browser]:
    app = build_app(runtime)
    return lambda: Browser(falcon.testing.TestClient(app))


def signed_in(browser: Callable[[], Browser], key: str) -> Browser:
    b = browser()
    response = b.login(key)
    assert response.status_code == 303, response.text
    return b


# --- what a key sees ------------------------------------------------------------------------------


def test_a_tenant_key_sees_only_its_own_tenants_invocations(
    runtime, browser, make_tenant, make_key
):
    # Given two tenants with one invocation each
    mine, theirs = make_tenant(), make_tenant()
    own, _ = runtime.invocations.accept(tenant_id=mine, function="echo", payload={"message": "o"})
    other, _ = runtime.invocations.accept(
        tenant_id=theirs, function="echo", payload={"message": "t"}
    )
    b = signed_in(browser, make_key(mine, "read,manage"))
    # When its key lists invocations, Then only its own appear, on every listing
    assert invocation_ids(b.get("/dashboard/invocations").text) == {own.id}
    assert invocation_ids(b.get("/dashboard/invocations?status=queued").text) == {own.id}
    # and another tenant's invocation does not exist for it, to read or to act on
    assert b.get(f"/dashboard/invocations/{other.id}").status_code == 404
    token = b.csrf()
    assert (
        b.post(f"/dashboard/invocations/{other.id}/cancel", {"csrf_token": token}).status_code
        == 404
    )
    assert runtime.store.invocations.get(other.id).status == "queued"
    # and asking for the other tenant is refused, as X-Tenant-ID is in the API
    assert b.get(f"/dashboard/invocations?tenant={theirs}").status_code == 403
    # Its overview counts only its own, and shows no infrastructure
    overview = b.get("/dashboard").text
    assert "Queue and worker figures are shown to admin keys." in overview
    assert theirs not in overview


def test_an_admin_key_sees_every_tenant_and_can_filter_by_one(
    runtime, browser, make_tenant, make_key
):
    first, second = make_tenant(), make_tenant()
    a, _ = runtime.invocations.accept(tenant_id=first, function="echo", payload={"message": "a"})
    b_inv, _ = runtime.invocations.accept(
        tenant_id=second, function="echo", payload={"message": "b"}
    )
    b = signed_in(browser, make_key(first, "admin"))
    assert invocation_ids(b.get("/dashboard/invocations").text) == {a.id, b_inv.id}
    assert invocation_ids(b.get(f"/dashboard/invocations?tenant={second}").text) == {b_inv.id}
    detail = b.get(f"/dashboard/invocations/{b_inv.id}")
    assert detail.status_code == 200 and second in detail.text
    # The tenant filter is kept in the navigation links.
    assert f'href="/dashboard/failed?tenant={second}"' in b.get(f"/dashboard?tenant={second}").text


def test_the_input_is_shown_only_to_manage_and_admin_keys(runtime, browser, make_tenant, make_key):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "the-input-text"}
    )
    reader = signed_in(browser, make_key(tenant, "read"))
    page = reader.get(f"/dashboard/invocations/{inv.id}").text
    assert "the-input-text" not in page
    assert "The input is shown to keys with the" in page
    manager = signed_in(browser, make_key(tenant, "read,manage"))
    assert "the-input-text" in manager.get(f"/dashboard/invocations/{inv.id}").text
    admin = signed_in(browser, make_key(make_tenant(), "admin"))
    assert "the-input-text" in admin.get(f"/dashboard/invocations/{inv.id}").text


def test_tracebacks_are_shown_only_to_manage_and_admin_keys(
    runtime, worker, browser, make_tenant, make_key
):
    # Given a failed invocation whose attempt stored a traceback (it names server files)
    tenant = make_tenant()
    failed, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    wait_for(finished(runtime, failed.id))
    [attempt] = runtime.store.invocations.attempts(failed.id)
    assert attempt.traceback and ".py" in attempt.traceback
    # When a read-only key opens it, Then it sees the error's type and message only
    reader = signed_in(browser, make_key(tenant, "read"))
    page = reader.get(f"/dashboard/invocations/{failed.id}").text
    assert "bad request upstream" in page and attempt.error["type"] in page
    assert "Traceback" not in page and ".py" not in page
    # And manage and admin keys see the traceback too
    manager = signed_in(browser, make_key(tenant, "read,manage"))
    assert "Traceback" in manager.get(f"/dashboard/invocations/{failed.id}").text
    admin = signed_in(browser, make_key(make_tenant(), "admin"))
    assert "Traceback" in admin.get(f"/dashboard/invocations/{failed.id}").text


# --- actions --------------------------------------------------------------------------------------


def test_a_failed_invocation_is_retried_and_a_delayed_one_cancelled(
    runtime, worker, browser, make_tenant, make_key
):
    tenant = make_tenant()
    failed, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    wait_for(finished(runtime, failed.id))
    later = runtime.store.db.clock() + timedelta(hours=1)
    delayed, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "later"}, at=later
    )
    b = signed_in(browser, make_key(tenant, "read,manage"))
    # Given the failed invocation's page, with its error and traceback
    page = b.get(f"/dashboard/invocations/{failed.id}").text
    assert "bad request upstream" in page and "Traceback" in page and ">Retry<" in page
    # When the operator retries it
    response = b.post(f"/dashboard/invocations/{failed.id}/retry", {"csrf_token": csrf_of(page)})
    # Then it is queued again and runs (and fails again, permanently)
    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/invocations/{failed.id}?notice=retried"
    assert "Queued again." in b.get(response.headers["location"]).text
    wait_for(
        lambda: runtime.store.invocations.get(failed.id).attempts == 2, what="the retried attempt"
    )
    # When the operator cancels the delayed one
    page = b.get(f"/dashboard/invocations/{delayed.id}").text
    assert ">Cancel<" in page and ">Retry<" not in page
    response = b.post(f"/dashboard/invocations/{delayed.id}/cancel", {"csrf_token": csrf_of(page)})
    # Then it is cancelled and no longer offers to be cancelled
    assert response.status_code == 303
    assert runtime.store.invocations.get(delayed.id).status == "cancelled"
    assert ">Cancel<" not in b.get(f"/dashboard/invocations/{delayed.id}").text
    # and cancelling it again is a conflict, answered as a page
    again = b.post(f"/dashboard/invocations/{delayed.id}/cancel", {"csrf_token": csrf_of(page)})
    assert again.status_code == 409 and again.headers["content-type"].startswith("text/html")


def test_failed_invocations_are_retried_in_bulk(runtime, worker, browser, make_tenant, make_key):
    tenant, other = make_tenant(), make_tenant()
    ids = []
    for _ in range(3):
        inv, _ = runtime.invocations.accept(
            tenant_id=tenant, function="flaky", payload={"permanent": True}
        )
        ids.append(inv.id)
    theirs, _ = runtime.invocations.accept(
        tenant_id=other, function="flaky", payload={"permanent": True}
    )
    for invocation_id in [*ids, theirs.id]:
        wait_for(finished(runtime, invocation_id))
    b = signed_in(browser, make_key(tenant, "read,manage"))
    page = b.get("/dashboard/failed").text
    assert invocation_ids(page) == set(ids)
    # When two of its own and another tenant's are submitted for retry
    response = b.post(
        "/dashboard/failed/retry",
        [("csrf_token", csrf_of(page)), ("id", ids[0]), ("id", ids[1]), ("id", theirs.id)],
    )
    # Then its two are queued again, the other tenant's is skipped untouched
    assert response.status_code == 303
    notice = b.get(response.headers["location"]).text
    assert "2 queued again; 1 skipped" in notice
    wait_for(lambda: all(runtime.store.invocations.get(i).attempts == 2 for i in ids[:2]))
    assert runtime.store.invocations.get(ids[2]).attempts == 1
    assert runtime.store.invocations.get(theirs.id).attempts == 1
    # An empty selection is a notice, not an error
    response = b.post("/dashboard/failed/retry", {"csrf_token": csrf_of(page)})
    assert "Select at least one invocation." in b.get(response.headers["location"]).text


def test_a_read_only_key_cannot_act(runtime, worker, browser, make_tenant, make_key):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    wait_for(finished(runtime, inv.id))
    b = signed_in(browser, make_key(tenant, "read"))
    page = b.get(f"/dashboard/invocations/{inv.id}").text
    assert ">Retry<" not in page
    response = b.post(f"/dashboard/invocations/{inv.id}/retry", {"csrf_token": csrf_of(page)})
    assert response.status_code == 403 and "manage" in response.text
    assert runtime.store.invocations.get(inv.id).status == "failed"


def test_a_suspended_tenant_retries_nothing(runtime, worker, browser, make_tenant, make_key):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    wait_for(finished(runtime, inv.id))
    b = signed_in(browser, make_key(tenant, "read,manage"))
    token = b.csrf()
    runtime.store.tenants.set_status(tenant, "suspended")  # type: ignore[arg-type]
    response = b.post(f"/dashboard/invocations/{inv.id}/retry", {"csrf_token": token})
    assert response.status_code == 403 and "suspended" in response.text
    assert runtime.store.invocations.get(inv.id).status == "failed"


# --- pages ----------------------------------------------------------------------------------------


@embedded_only
def test_overview_shows_counts_rates_queues_and_live_workers(
    runtime, worker, browser, make_tenant, make_key
):
    tenant = make_tenant()
    for payload in ({"message": "x"}, {"message": "y"}):
        inv, _ = runtime.invocations.accept(tenant_id=tenant, function="echo", payload=payload)
        wait_for(finished(runtime, inv.id))
    bad, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    wait_for(finished(runtime, bad.id))
    heartbeat = with_heartbeat(runtime, worker)
    try:
        page = signed_in(browser, make_key(tenant, "admin")).get("/dashboard").text
    finally:
        if heartbeat is not None:
            heartbeat.stop()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "succeeded 2" in text and "failed 1" in text and "created 3" in text
    assert "33.3 %" in text  # failure rate
    assert re.search(r"default 0 — 1", text)  # queue, waiting, oldest, live workers
    assert runtime.worker_id in page and ">live<" in page


@embedded_only
def test_functions_page_shows_schema_options_and_run_times(
    runtime, worker, browser, make_tenant, make_key
):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": "x"})
    wait_for(finished(runtime, inv.id))
    page = signed_in(browser, make_key(tenant, "read")).get("/dashboard/functions").text
    assert 'id="fn-echo"' in page and 'id="fn-flaky"' in page
    assert "&#34;sleep_s&#34;" in page  # the input schema, escaped
    echo_row = re.search(r'<a href="#fn-echo">echo</a>.*?</tr>', page, re.S).group(0)
    assert "100.0 %" in echo_row and " ms<" in echo_row


@embedded_only
def test_invocations_filter_by_function_status_and_time_and_page(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    echoes = [
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": str(n)}
        ).invocation
        for n in range(3)
    ]
    runtime.invocations.accept(tenant_id=tenant, function="flaky", payload={})
    b = signed_in(browser, make_key(tenant, "read"))
    assert invocation_ids(b.get("/dashboard/invocations?function=echo").text) == {
        e.id for e in echoes
    }
    assert invocation_ids(b.get("/dashboard/invocations?status=failed").text) == set()
    # the filter form as a browser submits it, every choice left empty
    blank = b.get("/dashboard/invocations?function=&status=&tenant=&from=&to=")
    assert blank.status_code == 200 and len(invocation_ids(blank.text)) == 4
    assert invocation_ids(b.get("/dashboard/invocations?from=2999-01-01T00:00").text) == set()
    assert len(invocation_ids(b.get("/dashboard/invocations?to=2999-01-01T00:00").text)) == 4
    # Paging: two at a time, newest first, the next link leads on
    first = b.get("/dashboard/invocations?function=echo&limit=2").text
    link = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = b.get(link).text
    assert invocation_ids(first) | invocation_ids(second) == {e.id for e in echoes}
    assert not invocation_ids(first) & invocation_ids(second)
    # Bad filters answer 400 with a page saying why
    for query in ("status=bogus", "from=yesterday", "limit=0", "cursor=garbage!"):
        response = b.get(f"/dashboard/invocations?{query}")
        assert response.status_code == 400, query
        assert response.headers["content-type"].startswith("text/html")


@embedded_only
def test_an_unknown_invocation_is_a_404_page(runtime, browser, make_tenant, make_key):
    b = signed_in(browser, make_key(make_tenant(), "read"))
    response = b.get("/dashboard/invocations/no-such-id")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "no-such-id" in response.text


@embedded_only
def test_a_store_that_does_not_answer_is_a_503_page(
    runtime, browser, make_tenant, make_key, monkeypatch
):
    b = signed_in(browser, make_key(make_tenant(), "read"))

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreUnavailable("the store is unreachable: OperationalError")

    monkeypatch.setattr(runtime.store.db, "session", unreachable)
    response = b.get("/dashboard")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "not answering" in response.text
