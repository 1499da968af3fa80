"""Dashboard sign-in, cookies, CSRF, escaping, and secrets kept out of pages and logs."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator

import falcon.testing
import pytest
import structlog

from gateway.dashboard.sessions import SessionOptions, SessionSigner
from runtime.app import Runtime
from runtime.logs import configure_logging
from runtime.settings import Settings
from runtime.store.invocations import NewInvocation
from tests.unit.test_dashboard import (
    Browser,
    build_app,
    csrf_of,
    embedded_only,
    finished,
    signed_in,
)
from tests.waiting import wait_for


@pytest.fixture
def browser(runtime: Runtime) -> Callable[[], Browser]:
    app = build_app(runtime)
    return lambda: Browser(falcon.testing.TestClient(app))


# --- sessions and cookies ---------------------------------------------------------------------


@embedded_only
def test_the_session_cookie_is_httponly_strict_and_secure_only_over_tls(
    runtime, browser, make_tenant, make_key
):
    key = make_key(make_tenant(), "read")
    # Over plain HTTP (a dev server on localhost)
    response = browser().login(key)
    cookie = response.cookies["ferry_session"]
    assert cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/dashboard"
    assert not cookie.secure
    assert cookie.max_age == 8 * 3600
    # Over TLS
    b = browser()
    token = csrf_of(b.get("/dashboard/login", protocol="https").text)
    response = b.post("/dashboard/login", {"csrf_token": token, "api_key": key}, protocol="https")
    assert response.status_code == 303
    cookie = response.cookies["ferry_session"]
    assert cookie.secure and cookie.http_only and cookie.same_site == "Strict"


def test_x_forwarded_proto_counts_only_behind_a_trusted_proxy():
    req = falcon.testing.create_req(headers={"X-Forwarded-Proto": "https"})
    assert not SessionSigner("s" * 32, SessionOptions()).secure(req)
    assert SessionSigner("s" * 32, SessionOptions(trust_forwarded_proto=True)).secure(req)
    assert SessionOptions.from_settings(Settings.from_env()) == SessionOptions()


@embedded_only
def test_the_cookie_carries_an_opaque_session_id_never_the_key(
    runtime, browser, make_tenant, make_key
):
    key = make_key(make_tenant(), "read")
    key_id, secret = re.fullmatch(r"fy_([a-z0-9]{12})_(.+)", key).groups()
    b = browser()
    b.login(key)
    value = b.cookies["ferry_session"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", value)
    assert key_id not in value and secret not in value and key not in value


@embedded_only
def test_a_forged_altered_or_expired_session_is_not_accepted(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    key = make_key(tenant, "read")
    b = browser()
    b.login(key)
    good = b.cookies["ferry_session"]
    session_id, timestamp, signature = good.split(".")

    def changed(text: str) -> str:
        # The first character: every bit of it counts (the last ones may be padding).
        return ("B" if text[0] == "A" else "A") + text[1:]

    forged = [
        f"{session_id}.{timestamp}.{changed(signature)}",  # bad signature
        f"{changed(session_id)}.{timestamp}.{signature}",  # another id
        f"{session_id}.{changed(timestamp)}.{signature}",  # another time
        f"{session_id}.{signature}",  # no timestamp
        "garbage",
    ]
    for value in forged:
        response = Browser(b.client).get("/dashboard", headers={"Cookie": f"ferry_session={value}"})
        assert response.status_code == 303, value
        assert response.headers["location"].startswith("/dashboard/login")
    # The same session id signed with another server's secret is refused too
    other = SessionSigner("another-server-secret-key", SessionOptions())
    cookie = other.issue(session_id)
    response = Browser(b.client).get("/dashboard", headers={"Cookie": f"ferry_session={cookie}"})
    assert response.status_code == 303
    # and a cookie signed long ago, though its record is live
    old = SessionSigner(runtime.settings.secret_key, SessionOptions(), clock=lambda: 1_000_000.0)
    cookie = old.issue(session_id)
    response = Browser(b.client).get("/dashboard", headers={"Cookie": f"ferry_session={cookie}"})
    assert response.status_code == 303
    # while the real one still works
    assert b.get("/dashboard").status_code == 200


@embedded_only
def test_revoking_the_key_signs_its_sessions_out(runtime, browser, make_tenant, make_key):
    key = make_key(make_tenant(), "read")
    b = signed_in(browser, key)
    assert b.get("/dashboard").status_code == 200
    key_id = re.fullmatch(r"fy_([a-z0-9]{12})_.+", key).group(1)
    runtime.store.tenants.revoke_key(key_id)
    response = b.get("/dashboard/invocations")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Finvocations"
    assert "ferry_session" not in b.cookies  # cleared


@embedded_only
def test_sign_in_needs_a_known_key_with_read(runtime, browser, make_tenant, make_key):
    tenant = make_tenant()
    b = browser()
    unknown = "fy_aaaaaaaaaaaa_" + "x" * 43
    response = b.login(unknown)
    assert response.status_code == 401 and "unknown, revoked or expired" in response.text
    assert unknown not in response.text and "ferry_session" not in b.cookies
    response = b.login(make_key(tenant, "invoke"))
    assert response.status_code == 403 and "read" in response.text
    assert "ferry_session" not in b.cookies


@embedded_only
def test_pages_send_a_visitor_without_a_session_to_sign_in(runtime, browser):
    for path in (
        "/dashboard",
        "/dashboard/functions",
        "/dashboard/failed",
        "/dashboard/invocations/x",
    ):
        response = browser().get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/dashboard/login?next=")
    # and an action without a session does nothing but send it there too
    response = browser().post("/dashboard/invocations/x/retry", {"csrf_token": "x"})
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"


@embedded_only
def test_after_sign_in_only_a_dashboard_path_is_followed(runtime, browser, make_tenant, make_key):
    key = make_key(make_tenant(), "read")
    for target, expected in [
        ("/dashboard/failed?function=echo", "/dashboard/failed?function=echo"),
        ("https://evil.example/", "/dashboard"),
        ("//evil.example/dashboard", "/dashboard"),
        ("/dashboard/../v1/functions", "/dashboard"),
        ("/dashboardevil", "/dashboard"),
    ]:
        assert browser().login(key, next_path=target).headers["location"] == expected, target


# --- CSRF -------------------------------------------------------------------------------------


@embedded_only
def test_every_action_without_the_csrf_token_is_refused(
    runtime, worker, browser, make_tenant, make_key
):
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    wait_for(finished(runtime, inv.id))
    b = signed_in(browser, make_key(tenant, "read,manage"))
    stranger = signed_in(browser, make_key(tenant, "read,manage"))
    foreign_token = stranger.csrf()
    actions = [
        f"/dashboard/invocations/{inv.id}/retry",
        f"/dashboard/invocations/{inv.id}/cancel",
        "/dashboard/failed/retry",
        "/dashboard/logout",
    ]
    for path in actions:
        for form in (
            {},
            {"csrf_token": ""},
            {"csrf_token": "forged"},
            {"csrf_token": foreign_token},
        ):
            response = b.post(path, {**form, "id": inv.id})
            assert response.status_code == 403, (path, form)
            assert "did not come from the dashboard" in response.text
    # Nothing happened: still failed, still signed in
    assert runtime.store.invocations.get(inv.id).status == "failed"
    assert b.get("/dashboard").status_code == 200
    # and the login form needs its own token and cookie
    fresh = browser()
    key = make_key(tenant, "read")
    assert fresh.post("/dashboard/login", {"api_key": key}).status_code == 403
    token = csrf_of(fresh.get("/dashboard/login").text)
    fresh.cookies.clear()  # a cross-site form post carries no SameSite=Strict cookie
    assert fresh.post("/dashboard/login", {"api_key": key, "csrf_token": token}).status_code == 403
    assert "ferry_session" not in fresh.cookies


@embedded_only
def test_sign_out_with_the_token_ends_the_session(runtime, browser, make_tenant, make_key):
    b = signed_in(browser, make_key(make_tenant(), "read"))
    response = b.post("/dashboard/logout", {"csrf_token": b.csrf()})
    assert (
        response.status_code == 303
        and response.headers["location"] == "/dashboard/login?notice=signed-out"
    )
    assert "ferry_session" not in b.cookies
    assert b.get("/dashboard").status_code == 303


# --- what pages show --------------------------------------------------------------------------


@embedded_only
def test_everything_shown_is_escaped_and_pages_carry_no_script(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    key = make_key(tenant, "invoke,read,manage")
    client = falcon.testing.TestClient(browser().client.app)
    response = client.simulate_post(
        "/v1/functions/echo/invocations",
        json={"message": "<img src=x onerror=alert(1)>"},
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "<script>alert(1)</script>"},
    )
    assert response.status_code == 202
    b = signed_in(browser, key)
    page = b.get(f"/dashboard/invocations/{response.json['id']}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    for path in (
        "/dashboard",
        "/dashboard/functions",
        "/dashboard/invocations",
        "/dashboard/failed",
        f"/dashboard/invocations/{response.json['id']}",
        "/dashboard/login",
    ):
        result = b.get(path)
        assert "<script" not in result.text.lower(), path
        assert "script-src" not in result.headers["content-security-policy"]
        assert result.headers["content-security-policy"].startswith("default-src 'none'")
        assert result.headers["x-frame-options"] == "DENY"
        assert result.headers["cache-control"] == "no-store"


@pytest.fixture
def log_stream(runtime) -> Iterator[io.StringIO]:
    """Every log line of the process (structlog and the standard library), at debug level."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(runtime.settings.model_copy(update={"log_level": "debug"}), stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        root.handlers[:], level = saved
        root.setLevel(level)


@embedded_only
def test_no_secret_reaches_a_page_or_a_log_line(
    runtime, worker, browser, make_tenant, make_key, log_stream
):
    tenant = make_tenant()
    key = make_key(tenant, "invoke,read,manage")
    secret_part = key.split("_", 2)[2]
    other_key = make_key(tenant, "invoke,read")
    # Given an invocation whose stored input holds secrets (a function's own fields)
    stored, _ = runtime.store.invocations.insert(
        NewInvocation(
            id="11111111-2222-3333-4444-555555555555",
            tenant_id=tenant,
            function="echo",
            queue="default",
            trigger="http",
            idempotency_key="k1",
            request_hash="0" * 64,
            request_id=None,
            parent_id=None,
            payload={
                "message": "hi",
                "password": "hunter2-pass",
                "nested": {"api_token": "tok-abc-123"},
                "note": f"copied {other_key} by mistake",
            },
            max_retries=0,
        )
    )
    # When the key is used over the API and to sign in, browse and act
    client = falcon.testing.TestClient(browser().client.app)
    api = client.simulate_post(
        "/v1/functions/flaky/invocations",
        json={"permanent": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert api.status_code == 202
    wait_for(finished(runtime, api.json["id"]))
    b = browser()
    b.login("fy_aaaaaaaaaaaa_" + "y" * 43)  # a refused attempt is logged too
    b.login(key)
    pages = []
    for path in (
        "/dashboard",
        "/dashboard/functions",
        "/dashboard/invocations",
        "/dashboard/failed",
        f"/dashboard/invocations/{stored.id}",
        f"/dashboard/invocations/{api.json['id']}",
    ):
        pages.append(b.get(path).text)
    pages.append(
        b.post(f"/dashboard/invocations/{api.json['id']}/retry", {"csrf_token": b.csrf()}).text
    )
    pages.append(client.simulate_get("/metrics").text)
    logs = log_stream.getvalue()
    # Then neither the key, nor its secret part, nor the stored secrets appear anywhere
    assert "dashboard_login" in logs and "http_request" in logs  # the log did capture the flow
    for secret in (key, secret_part, other_key, "hunter2-pass", "tok-abc-123"):
        assert secret not in logs, secret
        for page in pages:
            assert secret not in page, secret
    detail = pages[4]
    assert "[redacted]" in detail and "hi" in detail


@embedded_only
def test_a_stored_error_carrying_a_key_is_shown_redacted(
    runtime, worker, browser, make_tenant, make_key
):
    tenant = make_tenant()
    key = make_key(tenant, "read")
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="flaky", payload={"permanent": True}
    )
    wait_for(finished(runtime, inv.id))
    from runtime.store import models

    with runtime.store.db.session() as s:
        row = s.get(models.Invocation, inv.id)
        row.error = {"type": "Permanent", "message": f"upstream said: Authorization: Bearer {key}"}
    page = signed_in(browser, key).get(f"/dashboard/invocations/{inv.id}").text
    assert key not in page and "[redacted]" in page
