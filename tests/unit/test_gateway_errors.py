"""Every error is RFC 9457 problem+json; the contract's error table, row by row."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
import structlog
from falcon.testing import TestClient

from gateway.app import create_app
from runtime import errors
from tests.unit.conftest import assert_problem, invoke

INVOKE_ECHO = "/v1/functions/echo/invocations"


def stored(runtime, tenant):
    return runtime.store.invocations.list(tenant)[0]


def test_malformed_json_is_400(client, headers, runtime, tenant):
    # When the body is not JSON
    result = client.simulate_post(
        INVOKE_ECHO,
        body='{"message": "hi"',
        headers={**headers, "Content-Type": "application/json"},
    )
    # Then 400, and nothing was stored
    assert_problem(result, 400, "malformed-json")
    assert stored(runtime, tenant) == []


@pytest.mark.parametrize("body", ["NaN", b'{"message": "\xff"}'], ids=["nan", "not-utf8"])
def test_json_that_strict_parsers_refuse_is_400(client, headers, body):
    result = client.simulate_post(
        INVOKE_ECHO, body=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert_problem(result, 400, "malformed-json")


def test_invalid_input_is_422_with_errors(client, headers, runtime, tenant):
    result = invoke(client, headers, "echo", {"message": "", "sleep_s": "soon"})
    problem = assert_problem(result, 422, "input-invalid")
    assert sorted(e["loc"] for e in problem["errors"]) == [["message"], ["sleep_s"]]
    assert all(isinstance(e["msg"], str) and e["msg"] for e in problem["errors"])
    assert stored(runtime, tenant) == []


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "3", "null"])
def test_json_that_is_not_an_object_is_422(client, headers, body):
    result = client.simulate_post(
        INVOKE_ECHO, body=body, headers={**headers, "Content-Type": "application/json"}
    )
    problem = assert_problem(result, 422, "input-invalid")
    assert problem["errors"] == [{"loc": [], "msg": "Input should be a JSON object"}]


def test_unknown_function_is_404_before_the_body_is_read(client, headers):
    result = client.simulate_post(
        "/v1/functions/nope/invocations",
        body="not json",
        headers={**headers, "Content-Type": "text/plain"},
    )
    problem = assert_problem(result, 404, "function-not-found")
    assert "nope" in problem["detail"]
    assert_problem(client.simulate_get("/v1/functions/nope", headers=headers), 404)


def test_a_body_over_the_limit_is_413(runtime_with, headers, tenant):
    # Given a gateway that takes at most 64 bytes
    small = runtime_with(max_body_bytes=64)
    client = TestClient(create_app(small))
    headers = {**headers, "Content-Type": "application/json"}
    just_fits = '{"message": "' + "x" * 49 + '"}'
    assert len(just_fits) == 64
    # When the body is one byte over, by its Content-Length
    result = client.simulate_post(INVOKE_ECHO, body=just_fits[:-1] + " }", headers=headers)
    assert_problem(result, 413, "body-too-large")
    # When a chunked body (no Content-Length) is over: only 65 bytes are read to know it
    result = client.simulate_post(
        INVOKE_ECHO,
        body=just_fits + " " * 10_000,
        headers=headers,
        extras={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert_problem(result, 413, "body-too-large")
    # Then nothing was stored; a body of exactly the limit is accepted
    assert stored(small, tenant) == []
    assert client.simulate_post(INVOKE_ECHO, body=just_fits, headers=headers).status_code == 202
    chunked_ok = client.simulate_post(
        INVOKE_ECHO,
        body=just_fits,
        headers=headers,
        extras={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert chunked_ok.status_code == 202, chunked_ok.text


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_a_body_that_is_not_application_json_is_415(client, headers, content_type, runtime, tenant):
    sent = dict(headers)
    if content_type:
        sent["Content-Type"] = content_type
    result = client.simulate_post(INVOKE_ECHO, body='{"message": "hi"}', headers=sent)
    assert_problem(result, 415, "unsupported-media-type")
    assert stored(runtime, tenant) == []


def test_json_with_a_utf8_charset_is_accepted(client, headers):
    result = client.simulate_post(
        INVOKE_ECHO,
        body='{"message": "hi"}',
        headers={**headers, "Content-Type": "Application/JSON; charset=UTF-8"},
    )
    assert result.status_code == 202, result.text


def test_falcons_own_errors_are_problem_json(client, headers):
    # An unknown route, even without a key
    problem = assert_problem(client.simulate_get("/v1/nothing-here"), 404)
    assert problem["type"] == "about:blank" and problem["title"] == "Not Found"
    # A method the route does not have
    result = client.simulate_delete("/v1/functions", headers=headers)
    problem = assert_problem(result, 405)
    assert problem["title"] == "Method Not Allowed"
    assert "GET" in result.headers["allow"]


def test_a_bug_answers_problem_json_500_and_is_logged(runtime):
    # Given a route whose responder fails unexpectedly
    class Broken:
        public = True

        def on_get(self, req, resp):
            raise KeyError("a bug")

    app = create_app(runtime)
    app.add_route("/broken", Broken())
    client = TestClient(app)
    # When it is called
    with structlog.testing.capture_logs() as logs:
        result = client.simulate_get("/broken", headers={"X-Request-ID": "bug-1"})
    # Then a problem+json 500 with the request id, and the error is logged with its id
    problem = assert_problem(result, 500, "internal-error")
    assert "a bug" not in problem["detail"]
    assert result.headers["x-request-id"] == "bug-1"
    [error] = [e for e in logs if e["event"] == "unhandled_error"]
    assert error["error_type"] == "KeyError" and error["log_level"] == "error"


def test_a_driver_error_that_escaped_translation_is_503(runtime):
    # Given a route whose store call raises SQLAlchemy's own OperationalError
    class Flaky:
        public = True

        def on_get(self, req, resp):
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("connection refused"))

    app = create_app(runtime)
    app.add_route("/flaky", Flaky())
    result = TestClient(app).simulate_get("/flaky")
    assert_problem(result, 503, "store-unavailable")
    assert int(result.headers["retry-after"]) > 0


def test_a_valid_request_id_is_echoed(client, headers):
    result = client.simulate_get("/v1/functions", headers={**headers, "X-Request-ID": "abc 123"})
    assert result.headers["x-request-id"] == "abc 123"
    # ...on errors too, and it is stored with the invocation
    assert (
        client.simulate_get("/v1/x", headers={"X-Request-ID": "r-404"}).headers["x-request-id"]
        == "r-404"
    )
    created = invoke(client, {**headers, "X-Request-ID": "r-invoke"}, "echo", {"message": "m"})
    assert created.json["request_id"] == "r-invoke"


@pytest.mark.parametrize(
    "given", [None, "x" * 201, "caf\u00e9", ""], ids=["none", "long", "non-ascii", "empty"]
)
def test_a_missing_or_invalid_request_id_is_replaced_by_a_new_one(client, given):
    sent = {} if given is None else {"X-Request-ID": given}
    first = client.simulate_get("/healthz", headers=sent).headers["x-request-id"]
    second = client.simulate_get("/v1/functions", headers=sent).headers["x-request-id"]
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second and first != given


def test_one_log_line_per_request_without_secrets_or_bodies(client, headers, tenant):
    with structlog.testing.capture_logs() as logs:
        invoke(
            client, {**headers, "X-Request-ID": "log-1"}, "echo", {"message": "top secret input"}
        )
        client.simulate_get("/v1/functions")
    lines = [e for e in logs if e["event"] == "http_request"]
    assert len(lines) == 2
    assert lines[0] == {
        "event": "http_request",
        "log_level": "info",
        "method": "POST",
        "route": "/v1/functions/{name}/invocations",
        "status": 202,
        "duration_ms": lines[0]["duration_ms"],
        "request_id": "log-1",
        "tenant_id": tenant,
    }
    assert lines[1]["status"] == 401 and lines[1]["tenant_id"] is None
    everything = repr(logs)
    assert "top secret input" not in everything
    assert headers["Authorization"].split()[1] not in everything


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (errors.BadRequest("bad cursor"), 400, "bad-request"),
        (errors.RequestRejected("no"), 400, "request-rejected"),
        (errors.FunctionNotFound("none"), 404, "function-not-found"),
        (errors.TenantNotFound("none"), 404, "tenant-not-found"),
        (errors.InputInvalid("bad", errors=[{"loc": ["a"], "msg": "m"}]), 422, "input-invalid"),
        (errors.IdempotencyConflict(), 422, "idempotency-conflict"),
        (errors.InvalidState("running"), 409, "invalid-state"),
        (errors.TenantSuspended("paused"), 403, "tenant-suspended"),
        (errors.AlreadyExists("twice"), 409, "already-exists"),
        (errors.StoreUnavailable(), 503, "store-unavailable"),
        (errors.BrokerUnavailable(), 503, "broker-unavailable"),
        (errors.ConfigurationError("oops"), 500, "internal-error"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_each_runtime_error_maps_to_its_status(runtime, error, status, kind):
    # Given a route that raises the error
    class Raising:
        public = True

        def on_get(self, req, resp):
            raise error

    app = create_app(runtime)
    app.add_route("/raising", Raising())
    result = TestClient(app).simulate_get("/raising")
    # Then it answers with the mapped status as problem+json
    problem = assert_problem(result, status, kind)
    if status != 500:
        assert problem["detail"] == error.message
        assert problem["title"] == type(error).__doc__.strip()
    assert ("errors" in problem) == isinstance(error, errors.InputInvalid)
    assert ("retry-after" in result.headers) == (status == 503)
