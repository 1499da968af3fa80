"""Completion callbacks: the finished invocation POSTed, signed, retried, guarded, visible."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from functions.send_webhook import verify_signature
from runtime.callbacks.delivery import MAX_ATTEMPTS, backoff_s
from runtime.errors import FunctionDefinitionError
from runtime.registry import function
from runtime.services.invocations import new_invocation
from runtime.settings import Settings
from tests.unit.conftest import assert_problem, invoke
from tests.waiting import wait_for


class Receiver:
    """A local HTTP endpoint: records each POST and answers the next status of `answers`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ferry?token=t0k"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def settings(backend: str, settings_for: Callable[..., Settings]) -> Settings:
    """This backend's settings with loopback allow-listed for outbound requests."""
    return settings_for(backend, outbound_allow=("127.0.0.1",))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def _callback_rows(runtime: Any) -> int:
    with runtime.store.db.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM invocation_callbacks")).scalar_one())


def test_a_finished_invocation_is_posted_signed_to_its_callback_url(
    runtime, client, headers, tenant, worker, receiver
):
    # Given an invocation that names a callback URL
    accepted = invoke(
        client, {**headers, "Ferry-Callback-URL": receiver.url}, "echo", {"message": "hi"}
    )
    assert accepted.status_code in (200, 202), accepted.text
    invocation_id = accepted.json["id"]

    # When it finishes, the receiver gets one POST
    wait_for(lambda: receiver.requests, what="the callback to arrive")
    request_headers, body = receiver.requests[0]

    # Then it is signed with the tenant's webhook secret, and carries the outcome
    secret = runtime.secrets.webhook_secret(tenant).secret
    verify_signature(body, request_headers["Ferry-Signature"], secret)
    document = json.loads(body)
    assert document["id"] == invocation_id
    assert document["status"] == "succeeded"
    assert document["result"] == {"message": "hi", "tenant_id": tenant, "attempt": 1}
    assert document["tenant_id"] == tenant
    assert request_headers["Ferry-Event"] == "invocation.finished"
    assert request_headers["Ferry-Delivery"] == invocation_id

    # And the invocation shows the delivery
    def delivered() -> Any:
        shown = client.simulate_get(f"/v1/invocations/{invocation_id}", headers=headers).json
        return shown if shown["callback"]["state"] == "delivered" else None

    shown = wait_for(delivered, what="the delivery to be recorded")
    assert shown["callback"]["url"] == receiver.url
    assert shown["callback"]["attempts"] == 1
    assert shown["callback"]["last_error"] is None
    assert shown["callback"]["delivered_at"] is not None
    assert len(receiver.requests) == 1


def test_an_invocation_without_a_callback_shows_none(runtime, client, headers, tenant):
    invocation_id = invoke(client, headers, "echo", {"message": "m"}).json["id"]
    shown = client.simulate_get(f"/v1/invocations/{invocation_id}", headers=headers)
    assert shown.status_code == 200
    assert "callback" not in shown.json
    assert _callback_rows(runtime) == 0


def test_a_failed_delivery_is_retried_after_its_backoff(clocked, clock, make_tenant, receiver):
    runtime = clocked
    tenant = make_tenant()
    receiver.answers = [500, 200]
    accepted = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "m"}, callback_url=receiver.url
    )
    invocation_id = accepted.invocation.id
    # Not delivered while the invocation is not finished
    assert runtime.callbacks.deliver_due() == 0
    assert receiver.requests == []
    runtime.invocations.cancel(invocation_id, tenant)

    # When the receiver answers 500, the callback stays pending with the error
    assert runtime.callbacks.deliver_due() == 0
    callback = runtime.invocations.get(invocation_id, tenant).callback
    assert callback is not None
    assert (callback.state, callback.attempts) == ("pending", 1)
    assert callback.last_error == "the receiver answered 500"
    # and is not tried again before its backoff has passed
    clock.advance(backoff_s(1) / 2)
    assert runtime.callbacks.deliver_due() == 0
    assert len(receiver.requests) == 1

    # Then after the backoff it is delivered
    clock.advance(backoff_s(1))
    assert runtime.callbacks.deliver_due() == 1
    callback = runtime.invocations.get(invocation_id, tenant).callback
    assert callback is not None
    assert (callback.state, callback.attempts, callback.last_error) == ("delivered", 2, None)
    assert callback.delivered_at == clock.now
    first, second = receiver.requests
    assert first[1] == second[1]  # the same body every time
    assert json.loads(second[1])["status"] == "cancelled"
    secret = runtime.secrets.webhook_secret(tenant).secret
    verify_signature(second[1], second[0]["Ferry-Signature"], secret)


def test_a_receiver_that_keeps_failing_is_given_up(clocked, clock, make_tenant, receiver):
    runtime = clocked
    tenant = make_tenant()
    receiver.answers = [503] * MAX_ATTEMPTS
    invocation_id = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "m"}, callback_url=receiver.url
    ).invocation.id
    runtime.invocations.cancel(invocation_id, tenant)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        runtime.callbacks.deliver_due()
        clock.advance(backoff_s(attempt))
    callback = runtime.invocations.get(invocation_id, tenant).callback
    assert callback is not None
    assert (callback.state, callback.attempts) == ("failed", MAX_ATTEMPTS)
    assert (
        callback.last_error == f"gave up after {MAX_ATTEMPTS} attempts: the receiver answered 503"
    )
    clock.advance(3600)
    runtime.callbacks.deliver_due()
    assert len(receiver.requests) == MAX_ATTEMPTS


def test_an_internal_target_fails_for_good_without_a_connection(
    clocked, clock, make_tenant, monkeypatch
):
    runtime = clocked
    tenant = make_tenant()
    invocation_id = runtime.invocations.accept(
        tenant_id=tenant,
        function="echo",
        payload={"message": "m"},
        callback_url="http://hooks.internal.example:8080/ferry",
    ).invocation.id
    runtime.invocations.cancel(invocation_id, tenant)
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    attempted: list[Any] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.internal.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", int(port)))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> None:
        if str(address[0]) == "10.0.0.1":
            attempted.append(address)
            raise OSError("the test made no route to 10.0.0.1")
        real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)

    assert runtime.callbacks.deliver_due() == 0
    callback = runtime.invocations.get(invocation_id, tenant).callback
    assert callback is not None
    assert (callback.state, callback.attempts) == ("failed", 1)
    assert "a private address" in (callback.last_error or "")
    assert "FERRY_OUTBOUND_ALLOW" in (callback.last_error or "")
    assert attempted == []
    # Permanent: never tried again
    clock.advance(3600)
    assert runtime.callbacks.deliver_due() == 0
    callback = runtime.invocations.get(invocation_id, tenant).callback
    assert callback is not None and callback.attempts == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "not a url",
        "hooks.example.com/x",
        "http://",
        "http://user:secret@hooks.example.com/x",
        "http://hooks.example.com:99999/x",
        "",
        "https://hooks.example.com/" + "x" * 2000,
    ],
)
def test_a_bad_callback_url_is_400_and_stores_nothing(runtime, client, headers, url):
    result = invoke(client, {**headers, "Ferry-Callback-URL": url}, "echo", {"message": "m"})
    problem = assert_problem(result, 400, "bad-request")
    assert "callback URL" in problem["detail"]
    listed = client.simulate_get("/v1/invocations", headers=headers).json
    assert listed["invocations"] == []
    assert _callback_rows(runtime) == 0


class NoInput(BaseModel):
    pass


def handler(ctx: Any, payload: NoInput) -> None:
    return None


def test_a_function_may_name_its_own_callback_url(settings):
    spec = function(callback_url="https://hooks.example.com/default")(handler)
    fn = spec.resolve(settings)

    def row_for(callback_url: str | None) -> Any:
        return new_invocation(
            fn,
            "i-1",
            tenant_id="t",
            payload={},
            idempotency_key=None,
            trigger="http",
            request_id=None,
            parent_id=None,
            callback_url=callback_url,
        )

    # The function's URL unless the request names one
    assert row_for(None).callback_url == "https://hooks.example.com/default"
    assert row_for("https://other.example.com/").callback_url == "https://other.example.com/"
    with pytest.raises(FunctionDefinitionError, match="http or https"):
        function(callback_url="ftp://hooks.example.com/")(handler)


def test_a_replay_keeps_the_callback_stored_first(runtime, client, headers):
    first = {**headers, "Idempotency-Key": "k-1", "Ferry-Callback-URL": "https://a.example.com/"}
    again = {**first, "Ferry-Callback-URL": "https://b.example.com/"}
    created = invoke(client, first, "echo", {"message": "m"})
    replayed = invoke(client, again, "echo", {"message": "m"})
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.json["id"] == created.json["id"]
    shown = client.simulate_get(f"/v1/invocations/{created.json['id']}", headers=headers).json
    assert shown["callback"] == {
        "url": "https://a.example.com/",
        "state": "pending",
        "attempts": 0,
        "last_error": None,
        "delivered_at": None,
    }
    assert _callback_rows(runtime) == 1
