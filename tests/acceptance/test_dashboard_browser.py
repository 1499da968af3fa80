"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A threaded wsgiref server serves the app (API, dashboard, metrics) over an embedded
runtime with an in-process worker and its heartbeat, on a free port. The browser runs
with JavaScript disabled: every page must work without it. A screenshot of each page
is saved under the test's temporary directory (`screenshots/`).

Needs `apt-get install chromium` and `pip install playwright` (Playwright's own browser
download is not used). Skips locally without them; fails when `CI` is set.
"""

from __future__ import annotations

import os
import re
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests

from runtime.app import Runtime
from runtime.store.tenants import parse_scopes
from tests.conftest import prepare
from tests.unit.test_dashboard import build_app, with_heartbeat, with_worker_metrics
from tests.waiting import wait_for

pytestmark = pytest.mark.acceptance

CHROMIUM = os.environ.get("FERRY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_browser() -> Any:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append("Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("playwright (pip install playwright)")
        sync_playwright = None
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install them")
        pytest.skip(message)
    return sync_playwright


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the app logs requests itself
        pass


@pytest.fixture
def server(settings_for: Callable[..., Any]) -> Iterator[tuple[str, Runtime]]:
    """The app on a free port over an embedded runtime, wired as in production."""
    runtime = prepare(Runtime(settings_for("embedded")))
    worker = with_worker_metrics(runtime).start_worker()
    heartbeat = with_heartbeat(runtime, worker, interval_s=1, stale_after_s=10)
    app = build_app(runtime)
    httpd = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", runtime
    finally:
        httpd.shutdown()
        httpd.server_close()
        if heartbeat is not None:
            heartbeat.stop()
        worker.stop(grace_s=5)
        runtime.close()


@pytest.fixture
def chromium() -> Iterator[Any]:
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Shots:
    """Numbered screenshots of whole pages."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, page: Any, name: str) -> None:
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)


def sign_in(browser: Any, base: str, key: str) -> Any:
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.goto(f"{base}/dashboard")
    assert page.url.startswith(f"{base}/dashboard/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    assert page.url == f"{base}/dashboard"
    return page


def invoke(
    base: str,
    key: str,
    function: str,
    body: dict[str, Any],
    headers_key: str | None = None,
    **params: Any,
) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    if headers_key is not None:
        headers["Idempotency-Key"] = headers_key
    response = requests.post(
        f"{base}/v1/functions/{function}/invocations",
        json=body,
        params=params,
        headers=headers,
        timeout=30,
    )
    assert response.status_code in (200, 202), response.text
    return str(response.json()["id"])


def shown_status(page: Any, url: str, expected: str) -> Callable[[], bool]:
    def check() -> bool:
        page.goto(url)
        return bool(page.inner_text("#status") == expected)

    return check


def listed_ids(page: Any) -> set[str]:
    return set(re.findall(r"/dashboard/invocations/([0-9a-f-]{36})", page.content()))


def test_an_operator_works_the_dashboard_in_a_browser(server, chromium, tmp_path):
    base, runtime = server
    shots = Shots(tmp_path / "screenshots")
    for tenant in ("acme", "globex"):
        runtime.store.tenants.create(tenant)
    _, acme_key = runtime.store.tenants.create_key("acme", parse_scopes("invoke,read,manage"))
    _, globex_key = runtime.store.tenants.create_key("globex", parse_scopes("invoke,read"))
    _, admin_key = runtime.store.tenants.create_key(None, parse_scopes("admin"))  # operator
    theirs = invoke(base, globex_key, "echo", {"message": "globex's own"})

    # Given an operator of tenant acme who signs in with its key (JavaScript off)
    login = chromium.new_context(java_script_enabled=False).new_page()
    login.goto(f"{base}/dashboard/login")
    shots(login, "login")
    page = sign_in(chromium, base, acme_key)
    assert "tenant acme" in page.inner_text("header")
    shots(page, "overview-tenant")

    # When it invokes a function, Then it watches it succeed on its page
    ok = invoke(base, acme_key, "echo", {"message": "hello from the browser test"})
    detail = f"{base}/dashboard/invocations/{ok}"
    wait_for(shown_status(page, detail, "succeeded"), what="the invocation to show succeeded")
    assert "hello from the browser test" in page.inner_text("main")  # the result (and input)
    shots(page, "invocation-succeeded")

    # When a function fails for good, Then it is listed as failed, with its traceback
    bad = invoke(base, acme_key, "flaky", {"permanent": True})
    wait_for(lambda: runtime.store.invocations.get(bad).status == "failed", what="the failure")
    page.goto(f"{base}/dashboard/failed")
    assert bad in listed_ids(page)
    shots(page, "failed")
    page.click(f"a[href='/dashboard/invocations/{bad}']")
    assert "bad request upstream" in page.inner_text("main")
    page.click("summary:has-text('Traceback')")
    assert "Permanent: bad request upstream" in page.inner_text("main")
    shots(page, "invocation-failed")
    # and a retry from its page runs it again
    page.click("button:has-text('Retry')")
    assert page.inner_text(".notice") == "Queued again."
    wait_for(lambda: runtime.store.invocations.get(bad).attempts == 2, what="the retried attempt")
    wait_for(shown_status(page, f"{base}/dashboard/invocations/{bad}", "failed"))
    assert page.locator("table tbody tr").count() >= 2  # two attempts listed
    shots(page, "invocation-retried")

    # When an invocation is delayed an hour, Then it can be cancelled before it runs
    later = invoke(base, acme_key, "echo", {"message": "later"}, delay=3600)
    page.goto(f"{base}/dashboard/invocations/{later}")
    assert page.inner_text("#status") == "scheduled"
    page.click("button:has-text('Cancel')")
    assert page.inner_text(".notice") == "Cancelled."
    assert page.inner_text("#status") == "cancelled"
    assert runtime.store.invocations.get(later).status == "cancelled"
    shots(page, "invocation-cancelled")

    # The tenant's lists show its own invocations only; another tenant's is not found
    page.goto(f"{base}/dashboard/invocations")
    assert {ok, bad, later} <= listed_ids(page) and theirs not in listed_ids(page)
    shots(page, "invocations-acme")
    response = page.goto(f"{base}/dashboard/invocations/{theirs}")
    assert response.status == 404
    page.goto(f"{base}/dashboard/functions")
    assert "echo" in page.inner_text("main")
    shots(page, "functions")
    page.click("button:has-text('Sign out')")
    assert page.url == f"{base}/dashboard/login?notice=signed-out"

    # And the other tenant's read key is shown only its own invocation, and cannot act
    other = sign_in(chromium, base, globex_key)
    other.goto(f"{base}/dashboard/invocations")
    assert listed_ids(other) == {theirs}
    shots(other, "invocations-globex")
    other.goto(f"{base}/dashboard/invocations/{theirs}")
    assert other.locator("button:has-text('Retry')").count() == 0
    assert "The input is shown to keys with" in other.inner_text("main")

    # An admin sees every tenant, filters by one, and sees queues and live workers
    admin = sign_in(chromium, base, admin_key)
    admin.goto(f"{base}/dashboard/invocations")
    assert {ok, bad, later, theirs} <= listed_ids(admin)
    admin.select_option("select[name=tenant]", "globex")
    admin.click("button:has-text('Filter')")
    assert listed_ids(admin) == {theirs}
    admin.goto(f"{base}/dashboard")
    assert runtime.worker_id in admin.inner_text("main")
    assert "live" in admin.inner_text("main")
    shots(admin, "overview-admin")
    # and pauses and resumes a schedule from its page
    admin.click("nav a:has-text('Schedules')")
    assert "usage-report-weekly" in admin.inner_text("main")
    shots(admin, "schedules")
    admin.click("a:has-text('usage-report-weekly')")
    admin.click("button:has-text('Pause')")
    assert admin.inner_text("#state") == "paused"
    shots(admin, "schedule-paused")
    admin.click("button:has-text('Resume')")
    assert admin.inner_text("#state") == "active"

    assert [p.name for p in shots.taken] == [
        "01-login.png",
        "02-overview-tenant.png",
        "03-invocation-succeeded.png",
        "04-failed.png",
        "05-invocation-failed.png",
        "06-invocation-retried.png",
        "07-invocation-cancelled.png",
        "08-invocations-acme.png",
        "09-functions.png",
        "10-invocations-globex.png",
        "11-overview-admin.png",
        "12-schedules.png",
        "13-schedule-paused.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in shots.taken)
    print(f"screenshots in {shots.directory}")


STRICT_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def test_charts_search_invoke_form_and_error_pages_in_a_browser(server, chromium, tmp_path):
    base, runtime = server
    shots = Shots(tmp_path / "screenshots")
    runtime.store.tenants.create("acme")
    _, key = runtime.store.tenants.create_key("acme", parse_scopes("invoke,read,manage"))
    # Given some finished work: successes, a failure, and one delayed
    done = [invoke(base, key, "echo", {"message": f"m{n}"}) for n in range(4)]
    keyed = invoke(base, key, "echo", {"message": "keyed"}, headers_key="order-4711")
    bad = invoke(base, key, "flaky", {"permanent": True})
    for invocation_id in [*done, keyed, bad]:
        wait_for(
            lambda i=invocation_id: (
                runtime.store.invocations.get(i).status in ("succeeded", "failed")
            ),
            what="the invocations to finish",
        )
    page = sign_in(chromium, base, key)

    # The overview draws its charts on the server: three SVGs, no script, CSP unchanged
    response = page.goto(f"{base}/dashboard")
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.chart rect.ok").count() >= 1
    assert page.locator("svg.chart rect.bad").count() >= 1
    assert page.locator("svg.chart circle.info").count() >= 1
    html = page.content()
    assert "<script" not in html and "style=" not in html
    shots(page, "overview-charts")
    page.click(".window-toggle a:has-text('last day')")
    assert page.url == f"{base}/dashboard?window=day"
    assert page.locator("svg.chart").count() == 3

    # Search by idempotency key lists it; by id goes to its page
    page.fill("input[name=q]", "order-4711")
    page.click("form.search button")
    assert listed_ids(page) == {keyed}
    assert page.locator(f"a[title='{keyed}'] code").inner_text() == keyed[:8]
    assert page.locator("time[datetime]").count() >= 1
    shots(page, "search-by-key")
    page.fill("input[name=q]", bad)
    page.click("form.search button")
    assert page.url == f"{base}/dashboard/invocations/{bad}"

    # The invoke form, prefilled from the schema, creates an invocation and shows it
    page.goto(f"{base}/dashboard/functions")
    page.click("a:has-text('Invoke echo')")
    assert '"message": ""' in page.input_value("textarea[name=payload]")
    page.fill("textarea[name=payload]", '{"message": "typed in the form"}')
    page.fill("input[name=idempotency_key]", "form-key-1")
    shots(page, "invoke-form")
    page.click("button:has-text('Invoke')")
    assert page.inner_text(".notice") == "Invoked: this is the new invocation."
    [created] = runtime.store.search.find("acme", "form-key-1")
    assert page.url == f"{base}/dashboard/invocations/{created.id}?notice=invoked"
    wait_for(
        shown_status(page, f"{base}/dashboard/invocations/{created.id}", "succeeded"),
        what="the form's invocation to succeed",
    )
    assert "typed in the form" in page.inner_text("main")
    shots(page, "invoked")

    # A page that does not exist is an HTML page with the strict headers
    response = page.goto(f"{base}/dashboard/functions/greet")
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == STRICT_CSP
    assert "nothing is at /dashboard/functions/greet" in page.inner_text("main")
    shots(page, "not-found")

    assert [p.name for p in shots.taken] == [
        "01-overview-charts.png",
        "02-search-by-key.png",
        "03-invoke-form.png",
        "04-invoked.png",
        "05-not-found.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in shots.taken)
    print(f"screenshots in {shots.directory}")
