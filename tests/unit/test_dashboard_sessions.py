"""Dashboard sessions are server-side records: signing out ends them, a copied cookie dies.

Through the real app on both backends: sign out, sign out everywhere, a refused key, and
cookies or CSRF tokens that are tampered with, non-ASCII, signed for another purpose or
taken from another session. Then the session service alone, on a clock of its own.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import falcon.testing
import pytest
import sqlalchemy as sa
from itsdangerous import TimestampSigner

from gateway.dashboard.sessions import SALTS, SessionOptions, SessionSigner
from runtime.app import Runtime
from runtime.services.sessions import SessionService
from runtime.store import Database, Store, access_models
from tests.unit.test_dashboard import Browser, build_app, signed_in
from tests.waiting import finished, wait_for

SESSIONS = access_models.DashboardSession.__table__


@pytest.fixture
def browser(runtime: Runtime) -> Callable[[], Browser]:
    app = build_app(runtime)
    return lambda: Browser(falcon.testing.TestClient(app))


def with_cookie(b: Browser, value: str) -> Browser:
    """Another browser holding only this session cookie (a copied or crafted one)."""
    other = Browser(b.client)
    other.cookies["ferry_session"] = value
    return other


def assert_sent_to_sign_in(response: falcon.testing.Result) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/dashboard/login")


def key_id_of(key: str) -> str:
    return re.fullmatch(r"fy_([a-z0-9]{12})_.+", key).group(1)


def records(runtime: Runtime, **where: str) -> list[sa.Row]:
    query = sa.select(SESSIONS).where(*(SESSIONS.c[k] == v for k, v in where.items()))
    with runtime.store.db.engine.connect() as connection:
        return list(connection.execute(query))


# --- sign out -----------------------------------------------------------------------------------


def test_a_copied_cookie_is_refused_once_its_session_signed_out(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    b = signed_in(browser, make_key(tenant, "read,manage"))
    copied, token = b.cookies["ferry_session"], b.csrf()
    assert with_cookie(b, copied).get("/dashboard").status_code == 200  # a copy works...
    response = b.post("/dashboard/logout", {"csrf_token": token})
    assert response.headers["location"] == "/dashboard/login?notice=signed-out"
    # ...until the session signs out: then the copy opens no page and does no action.
    assert_sent_to_sign_in(with_cookie(b, copied).get("/dashboard"))
    assert_sent_to_sign_in(with_cookie(b, copied).post("/dashboard/logout", {"csrf_token": token}))
    # The record says so, and keeps only a hash of the session id.
    session_id = copied.split(".")[0]
    (record,) = records(runtime, id_hash=hashlib.sha256(session_id.encode()).hexdigest())
    assert record.ended_at is not None and record.expires_at <= record.ended_at
    assert not records(runtime, id_hash=session_id)


def test_sign_out_everywhere_ends_every_session_of_the_key_and_no_other(
    runtime, browser, make_tenant, make_key
):
    tenant = make_tenant()
    key, other_key = make_key(tenant, "read"), make_key(tenant, "read")
    here, elsewhere = signed_in(browser, key), signed_in(browser, key)
    another_key = signed_in(browser, other_key)
    page = here.get("/dashboard").text
    assert 'action="/dashboard/logout/everywhere"' in page and "Sign out everywhere" in page
    copied = here.cookies["ferry_session"]
    response = here.post("/dashboard/logout/everywhere", {"csrf_token": here.csrf()})
    assert response.headers["location"] == "/dashboard/login?notice=signed-out-everywhere"
    assert "every session of that API key has ended" in here.get(response.headers["location"]).text
    assert "ferry_session" not in here.cookies
    # The other browser of the same key is signed out, and so is a copy of this one.
    assert_sent_to_sign_in(elsewhere.get("/dashboard"))
    assert_sent_to_sign_in(with_cookie(here, copied).get("/dashboard"))
    # Another key's session goes on.
    assert another_key.get("/dashboard").status_code == 200
    assert all(r.ended_at is not None for r in records(runtime, key_id=key_id_of(key)))
    assert [r.ended_at for r in records(runtime, key_id=key_id_of(other_key))] == [None]
    # Signing in again works.
    assert signed_in(browser, key).get("/dashboard").status_code == 200


def test_sign_out_everywhere_needs_the_sessions_csrf_token(runtime, browser, make_tenant, make_key):
    key = make_key(make_tenant(), "read")
    b, elsewhere = signed_in(browser, key), signed_in(browser, key)
    response = b.post("/dashboard/logout/everywhere", {"csrf_token": elsewhere.csrf()})
    assert response.status_code == 403
    assert elsewhere.get("/dashboard").status_code == 200
    assert b.get("/dashboard").status_code == 200


def test_suspending_the_tenant_ends_its_sessions_for_good(runtime, browser, make_tenant, make_key):
    tenant = make_tenant()
    b = signed_in(browser, make_key(tenant, "read"))
    runtime.tenants.suspend(tenant)
    response = b.get("/dashboard")
    assert response.status_code == 403 and "suspended" in response.text
    runtime.tenants.resume(tenant)
    # The session ended when the key was refused: resuming the tenant does not revive it.
    assert_sent_to_sign_in(b.get("/dashboard"))


def test_revoking_the_key_ends_its_sessions(runtime, browser, make_tenant, make_key):
    key = make_key(make_tenant(), "read")
    b = signed_in(browser, key)
    runtime.tenants.revoke_key(key_id_of(key))
    assert_sent_to_sign_in(b.get("/dashboard"))
    assert [r.ended_at is not None for r in records(runtime, key_id=key_id_of(key))] == [True]


def test_deleting_a_revoked_key_deletes_its_sessions(
    runtime, worker, browser, make_tenant, make_key
):
    tenant = make_tenant()
    key = make_key(tenant, "read")
    signed_in(browser, key)
    runtime.tenants.revoke_key(key_id_of(key))  # its session record is still there
    assert len(records(runtime, key_id=key_id_of(key))) == 1
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="cleanup_expired_keys", payload={"grace_days": 0}
    )
    done = wait_for(finished(runtime, inv.id), what="the cleanup")
    assert done.status == "succeeded", done.error
    assert done.result["key_ids"] == [key_id_of(key)]
    assert not records(runtime, key_id=key_id_of(key))


# --- crafted cookies and tokens -----------------------------------------------------------------


def test_tampered_non_ascii_or_wrongly_salted_cookies_get_the_sign_in_page(
    runtime, browser, make_tenant, make_key
):
    b = signed_in(browser, make_key(make_tenant(), "read,manage"))
    good = b.cookies["ferry_session"]
    session_id, timestamp, signature = good.split(".")
    secret = runtime.settings.secret_key

    def signed_for(purpose: str) -> str:
        # The live session's own id, signed with the server's secret for another purpose.
        signer = TimestampSigner(
            secret, salt=SALTS[purpose], key_derivation="hmac", digest_method=hashlib.sha256
        )
        return signer.sign(session_id).decode()

    crafted = [
        f"{session_id}.{timestamp}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}",
        f"{session_id}.{timestamp}.{signature}\u00e9",
        f"\u00e9\u4e2d.{timestamp}.{signature}",
        "\u00b2" * 50,
        signed_for("login-cookie"),
        signed_for("csrf"),
        TimestampSigner(secret).sign(session_id).decode(),  # itsdangerous' default salt
        good + "." + signature,
        # Signed right, but naming no session the server knows.
        SessionSigner(secret, SessionOptions()).issue(secrets.token_urlsafe(32)),
        "." * 300,
    ]
    for value in crafted:
        assert_sent_to_sign_in(with_cookie(b, value).get("/dashboard"))
        assert_sent_to_sign_in(with_cookie(b, value).post("/dashboard/logout", {"csrf_token": "x"}))
    # The login form's cookie is no session, and a session cookie is no login form.
    fresh = Browser(b.client)
    fresh.get("/dashboard/login")
    assert_sent_to_sign_in(with_cookie(b, fresh.cookies["ferry_login"]).get("/dashboard"))
    assert b.get("/dashboard").status_code == 200  # the real cookie still works


def test_a_csrf_token_of_another_session_is_refused(runtime, browser, make_tenant, make_key):
    tenant = make_tenant()
    key = make_key(tenant, "read,manage")
    b, same_key, other_key = (
        signed_in(browser, key),
        signed_in(browser, key),
        signed_in(browser, make_key(tenant, "read,manage")),
    )
    own = b.csrf()
    assert own != same_key.csrf()
    for token in (same_key.csrf(), other_key.csrf(), own + "A", own[:-1], "\u00e9" * len(own)):
        response = b.post("/dashboard/logout", {"csrf_token": token})
        assert response.status_code == 403, token
        assert "did not come from the dashboard" in response.text
    assert b.get("/dashboard").status_code == 200  # nothing ended
    assert b.post("/dashboard/logout", {"csrf_token": own}).status_code == 303


# --- the service on its own clock ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_sessions_expire_are_touched_and_ended_ones_are_removed_at_sign_in(
    runtime, make_tenant, make_key
):
    clock = Clock()
    service = SessionService(Store(Database(runtime.store.db.engine, clock)), max_age_s=3600)
    principal = runtime.tenants.authenticate(make_key(make_tenant(), "read"))
    first, second = service.login(principal), service.login(principal)
    assert service.check(first.session_id).principal == principal
    clock.advance(30)
    assert service.check(first.session_id).record.last_seen_at == first.record.created_at
    clock.advance(60)
    assert service.check(first.session_id) is not None
    assert service.check(first.session_id).record.last_seen_at == clock.now  # written once a minute
    assert service.logout(second.session_id) and not service.logout(second.session_id)
    assert service.check(second.session_id) is None
    clock.advance(3600)
    assert service.check(first.session_id) is None  # expired
    assert len(records(runtime, key_id=principal.key_id)) == 2  # both kept until a sign-in
    third = service.login(principal)
    assert [r.id_hash for r in records(runtime, key_id=principal.key_id)] == [third.record.id_hash]
    assert service.check("not a session id") is None and not service.logout("\u00e9" * 43)
