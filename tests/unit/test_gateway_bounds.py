"""Crafted input is a 4xx problem, never a 500 (issue 12, item 6): one test per audit finding."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import falcon.testing
import pytest

from gateway.dashboard.sessions import SessionOptions, SessionSigner
from gateway.hooks import MAX_JSON_DEPTH
from runtime.errors import BadRequest
from runtime.store.paging import decode_cursor, encode_cursor
from tests.unit.conftest import assert_problem, invoke
from tests.unit.test_dashboard import Browser, build_app, csrf_of, embedded_only, signed_in


def nested(depth: int) -> object:
    """A JSON value `depth` lists deep."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def webhook(data: object) -> dict[str, object]:
    return {"url": "https://example.com/hook", "event": "x", "data": {"deep": data}}


# --- the request body ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 1000, 100_000])
def test_a_deeply_nested_body_is_a_400_before_validation(client, headers, depth):
    raw = json.dumps(webhook(nested(1))).replace("[1]", "[" * depth + "1" + "]" * depth)
    result = client.simulate_post(
        "/v1/functions/send_webhook/invocations",
        body=raw,
        headers={**headers, "Content-Type": "application/json"},
    )
    document = assert_problem(result, 400, "body-too-deep")
    assert str(MAX_JSON_DEPTH) in document["detail"]


def test_a_body_at_the_depth_cap_is_accepted(client, headers):
    # The body and its `data` object take two levels.
    result = invoke(client, headers, "send_webhook", webhook(nested(MAX_JSON_DEPTH - 2)))
    assert result.status_code == 202, result.text
    result = invoke(client, headers, "send_webhook", webhook(nested(MAX_JSON_DEPTH - 1)))
    assert_problem(result, 400, "body-too-deep")


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_a_number_out_of_float_range_is_a_400(client, headers, number):
    # PostgreSQL's JSON columns cannot hold infinity: this was a 500 on the production backend.
    result = client.simulate_post(
        "/v1/functions/echo/invocations",
        body=f'{{"message": "x", "sleep_s": {number}}}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert_problem(result, 400, "malformed-json")


# --- page cursors -------------------------------------------------------------------------------


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


CRAFTED_CURSORS = {
    "deep": base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("="),
    "naive datetime": _cursor(["2030-01-01T00:00:00", "x"]),
    "dict": _cursor({"2030-01-01T00:00:00+00:00": 1, "b": 2}),
    "dict as id": _cursor(["2030-01-01T00:00:00+00:00", {"a": 1}]),
    "three items": _cursor(["2030-01-01T00:00:00+00:00", "x", "y"]),
    "number as time": _cursor([1, "x"]),
    "garbage": "AAAA",
    "not base64 json": _cursor("just a string"),
    "out of range offset": _cursor(["9999-12-31T23:59:59-23:59", "x"]),
    "overlong": _cursor(["2030-01-01T00:00:00+00:00", "x" * 5000]),
}


@pytest.mark.parametrize("name", CRAFTED_CURSORS)
def test_a_crafted_cursor_is_a_400(client, headers, name):
    result = client.simulate_get(
        "/v1/invocations", headers=headers, params={"cursor": CRAFTED_CURSORS[name]}
    )
    assert_problem(result, 400, "bad-request")


@pytest.mark.parametrize("name", CRAFTED_CURSORS)
def test_decode_cursor_refuses_crafted_cursors(name):
    with pytest.raises(BadRequest):
        decode_cursor(CRAFTED_CURSORS[name])


def test_a_cursor_round_trips_in_utc():
    moment = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert decode_cursor(encode_cursor(moment, "abc")) == (moment, "abc")


# --- ?at and ?delay -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"at": "9999-12-31T23:59:59Z"},
        {"at": "2300-01-01T00:00:00+01:00"},
        {"delay": str(31 * 86400)},
        {"delay": str(10 * 365 * 86400)},
    ],
)
def test_a_run_beyond_the_largest_delay_is_a_400(client, headers, query):
    document = assert_problem(
        invoke(client, headers, "echo", {"message": "hi"}, **query), 400, "bad-request"
    )
    assert "FERRY_MAX_DELAY_S" in document["detail"] or "30 days" in document["detail"]


def test_a_run_within_the_largest_delay_is_accepted(client, headers):
    soon = (datetime.now(UTC) + timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert invoke(client, headers, "echo", {"message": "hi"}, at=soon).status_code == 202
    assert invoke(client, headers, "echo", {"message": "hi"}, delay=29 * 86400).status_code == 202


def test_the_largest_delay_is_a_setting_for_every_caller(runtime_with, backend, make_tenant):
    runtime = runtime_with(max_delay_s=60)
    tenant = "t-delay"
    runtime.store.tenants.create(tenant)
    with pytest.raises(BadRequest, match="60"):
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "x"}, delay_s=61, trigger="cli"
        )
    later = runtime.store.db.clock() + timedelta(seconds=120)
    with pytest.raises(BadRequest):
        runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "x"}, at=later
        )
    accepted = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}, delay_s=59
    )
    assert accepted.created


def test_openapi_documents_the_largest_delay_from_the_setting(runtime_with):
    runtime = runtime_with(max_delay_s=3600)
    client = falcon.testing.TestClient(build_app(runtime))
    parameters = client.simulate_get("/openapi.json").json["components"]["parameters"]
    assert parameters["delay"]["schema"]["maximum"] == 3600
    assert "3600" in parameters["at"]["description"] or "1 h" in parameters["at"]["description"]


# --- constant-time comparisons ------------------------------------------------------------------


def test_the_signer_refuses_non_ascii_without_raising():
    signer = SessionSigner("s" * 32, SessionOptions())
    session_id = "a" * 43
    cookie = signer.issue(session_id)
    head, _signature = cookie.rsplit(".", 1)
    assert signer.read(f"{head}.\u00e9\u00e9\u00e9") is None
    assert signer.read(f"{session_id}.\u00b2.sig") is None
    assert not signer.csrf_valid(session_id, "\u00e9" * 43)
    login_cookie, _token = signer.login_nonce()
    assert not signer.login_valid(login_cookie, "t\u00e9")
    nonce, issued, _sig = login_cookie.split(".")
    assert not signer.login_valid(f"{nonce}.{issued}.\u00e9", "t")


@embedded_only
def test_non_ascii_in_the_session_cookie_csrf_token_or_login_token_is_not_a_500(
    runtime, make_tenant, make_key
):
    app = build_app(runtime)
    key = make_key(make_tenant(), "read,manage")
    b = signed_in(lambda: Browser(falcon.testing.TestClient(app)), key)
    head, _signature = b.cookies["ferry_session"].rsplit(".", 1)
    # A session cookie with a non-ASCII signature: sent to sign in, as any bad cookie.
    forged = Browser(b.client)
    response = forged.get("/dashboard", headers={"Cookie": f"ferry_session={head}.\u00e9\u00e9"})
    assert response.status_code == 303
    # A CSRF token with non-ASCII: refused as a forged one.
    response = b.post("/dashboard/logout", {"csrf_token": "\u00e9" * 43})
    assert response.status_code == 403
    # The login form's token with non-ASCII.
    fresh = Browser(b.client)
    csrf_of(fresh.get("/dashboard/login").text)
    response = fresh.post("/dashboard/login", {"csrf_token": "\u00e9\u4e2d", "api_key": key})
    assert response.status_code == 403
    # A login cookie with non-ASCII.
    fresh.cookies["ferry_login"] = fresh.cookies["ferry_login"][:-2] + "\u00e9\u00e9"
    response = fresh.post("/dashboard/login", {"csrf_token": "x", "api_key": key})
    assert response.status_code == 403
    # A non-ASCII API key on the login form and as a bearer token.
    fresh = Browser(b.client)
    token = csrf_of(fresh.get("/dashboard/login").text)
    response = fresh.post("/dashboard/login", {"csrf_token": token, "api_key": "fy_\u00e9_\u00e9"})
    assert response.status_code == 401
    response = b.client.simulate_get(
        "/v1/invocations", headers={"Authorization": "Bearer fy_\u00e9\u00e9_\u00e9\u00e9"}
    )
    assert_problem(response, 401)


# --- metric labels ------------------------------------------------------------------------------


@embedded_only
@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")
def test_made_up_http_methods_share_one_label_and_metrics_stay_bounded(runtime):
    client = falcon.testing.TestClient(build_app(runtime))
    # One of each kind first: the series they add are the only new ones.
    client.simulate_request("BREW", "/v1/functions")
    client.simulate_request("BREW", "/p")
    client.simulate_get("/metrics")
    size_before = len(client.simulate_get("/metrics").text)
    for n in range(500):
        result = client.simulate_request(f"X{n:03d}", "/v1/functions" if n % 2 else f"/p{n}")
        assert result.status_code < 500
    text = client.simulate_get("/metrics").text
    assert 'method="other"' in text
    assert "X499" not in text and "/p498" not in text
    assert len(text) < size_before + 500  # counters' digits only
