"""`send_webhook`: signed deliveries to a real HTTP receiver, retries and refusals."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from functions import send_webhook as webhook
from runtime import Permanent, Retryable
from runtime.errors import InputInvalid
from runtime.testing import FunctionHarness
from tests.waiting import finished, wait_for


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Seconds to wait before answering (to make the sender's read time out).
    delay_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: Message
    body: bytes


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records requests and answers from a script.

    The last scripted answer repeats once the script runs out.
    """

    def __init__(self, answers: list[Answer], port: int = 0) -> None:
        self.requests: list[Received] = []
        self._answers = list(answers)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer = receiver._record(Received(self.path, self.headers, body))
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        # A short poll interval: stopping the server waits for one poll.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ferry?token=abc"

    def _record(self, received: Received) -> Answer:
        with self._lock:
            self.requests.append(received)
            return self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*answers: Answer, port: int = 0) -> Receiver:
        running = Receiver(list(answers) or [Answer(200)], port)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_secret(runtime, tenant_id: str) -> str:
    """The tenant's webhook signing secret, as its manage key or the CLI reads it."""
    return runtime.secrets.webhook_secret(tenant_id).secret


def event_for(url: str) -> dict:
    return {"url": url, "event": "invoice.paid", "data": {"invoice": "in_1", "cents": 1200}}


def accept_delivery(runtime, tenant: str, url: str, **extra):
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function="send_webhook", payload=event_for(url), **extra
    )
    return inv


#: The receivers listen on loopback, which `ctx.http` refuses unless the operator allows it.
LOOPBACK_ALLOWED = ("127.0.0.1",)


@pytest.fixture
def settings(backend, settings_for):
    """The runtime's settings, with the test receivers' loopback address allowed."""
    return settings_for(backend, outbound_allow=LOOPBACK_ALLOWED)


@pytest.fixture
def harness() -> Iterator[FunctionHarness]:
    with FunctionHarness(tenant_id="acme", outbound_allow=LOOPBACK_ALLOWED) as harness:
        yield harness


@pytest.fixture
def attempt(harness) -> Callable[..., webhook.Output]:
    """Run attempt `n` of one delivery (one idempotency key, one acceptance time)."""
    accepted_at = datetime.now(UTC)

    def run(url: str, n: int = 1, key: str = "order-42") -> webhook.Output:
        return harness.run(
            webhook.send_webhook,
            event_for(url),
            attempt=n,
            idempotency_key=key,
            accepted_at=accepted_at,
        )

    return run


# --- the function, run by runtime.testing -----------------------------------------------------


def test_a_delivery_is_signed_json_with_the_delivery_headers(harness, attempt, receiver):
    # Given the tenant's endpoint
    endpoint = receiver(Answer(204))
    # When it sends an event
    out = attempt(endpoint.url, key="order-42")
    # Then the endpoint got one POST whose signature verifies with the tenant's secret
    [request] = endpoint.requests
    assert request.path == "/hooks/ferry?token=abc"
    assert request.headers["Content-Type"] == "application/json"
    webhook.verify_signature(
        request.body, request.headers["Ferry-Signature"], harness.webhook_secret().secret
    )
    # And another tenant's secret does not verify it
    harness.store.tenants.create("other")
    other = harness.secrets.webhook_secret("other").secret
    with pytest.raises(webhook.SignatureInvalid):
        webhook.verify_signature(request.body, request.headers["Ferry-Signature"], other)
    # And the body and headers carry the event and one delivery id
    body = json.loads(request.body)
    delivery = body["id"]
    assert body["event"] == "invoice.paid"
    assert body["data"] == {"invoice": "in_1", "cents": 1200}
    assert body["created_at"].endswith("Z")
    assert datetime.fromisoformat(body["created_at"]) <= datetime.now(UTC)
    assert request.headers["Ferry-Event"] == "invoice.paid"
    assert request.headers["Ferry-Delivery"] == delivery
    assert request.headers["Idempotency-Key"] == delivery
    assert delivery == webhook.delivery_id("acme", "send_webhook", "order-42")
    assert out.status_code == 204
    assert out.delivery_id == delivery
    assert out.attempt == 1
    assert out.duration_ms >= 0


def test_server_errors_are_retried_with_the_same_delivery_until_it_succeeds(
    harness, attempt, receiver
):
    endpoint = receiver(Answer(500), Answer(503), Answer(200))
    with pytest.raises(Retryable, match="500"):
        attempt(endpoint.url, 1)
    with pytest.raises(Retryable, match="503"):
        attempt(endpoint.url, 2)
    out = attempt(endpoint.url, 3)
    # Every attempt sent the same delivery and the same bytes, each freshly signed
    assert len(endpoint.requests) == 3
    assert len({r.headers["Ferry-Delivery"] for r in endpoint.requests}) == 1
    assert len({r.body for r in endpoint.requests}) == 1
    secret = harness.webhook_secret().secret
    for request in endpoint.requests:
        webhook.verify_signature(request.body, request.headers["Ferry-Signature"], secret)
    assert out.delivery_id == endpoint.requests[0].headers["Ferry-Delivery"]
    assert out.attempt == 3


def test_a_refused_connection_is_retried_until_the_endpoint_listens(attempt, receiver):
    # Given an endpoint that is not listening yet
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    # When the first attempt fails, it asks for a retry
    with pytest.raises(Retryable, match="ConnectionError"):
        attempt(url, 1)
    # Then once the endpoint listens, a retry delivers it
    endpoint = receiver(Answer(200), port=port)
    assert attempt(url, 2).status_code == 200
    assert len(endpoint.requests) == 1


def test_a_read_timeout_is_retried(attempt, receiver, monkeypatch):
    # The production read timeout (20 s) is shortened so the test stays quick.
    monkeypatch.setattr(webhook, "READ_TIMEOUT_S", 0.5)
    endpoint = receiver(Answer(200, delay_s=3), Answer(200))
    with pytest.raises(Retryable, match="ReadTimeout"):
        attempt(endpoint.url, 1)
    assert attempt(endpoint.url, 2).attempt == 2
    assert len({r.headers["Ferry-Delivery"] for r in endpoint.requests}) == 1


def test_too_many_requests_asks_for_the_wait_retry_after_gives(attempt, receiver):
    endpoint = receiver(Answer(429, {"Retry-After": "2"}))
    with pytest.raises(Retryable, match="429") as refused:
        attempt(endpoint.url)
    assert refused.value.delay_s == 2


@pytest.mark.parametrize("status", [400, 404, 410, 301])
def test_a_client_error_or_redirect_fails_at_once(attempt, receiver, status):
    endpoint = receiver(Answer(status, {"Location": "http://elsewhere.invalid/"}))
    with pytest.raises(Permanent, match=str(status)):
        attempt(endpoint.url)
    assert len(endpoint.requests) == 1


# --- through the runtime ----------------------------------------------------------------------


def test_a_delivery_through_the_runtime_is_signed_and_stored(
    runtime, worker, make_tenant, receiver
):
    tenant = make_tenant()
    endpoint = receiver(Answer(204))
    inv = accept_delivery(runtime, tenant, endpoint.url, idempotency_key="order-42")
    done = wait_for(finished(runtime, inv.id), what="the delivery")
    assert done.status == "succeeded" and done.attempts == 1
    [request] = endpoint.requests
    webhook.verify_signature(
        request.body, request.headers["Ferry-Signature"], webhook_secret(runtime, tenant)
    )
    assert datetime.fromisoformat(json.loads(request.body)["created_at"]) <= done.started_at
    assert done.result["delivery_id"] == webhook.delivery_id(tenant, "send_webhook", "order-42")


def test_too_many_requests_waits_as_long_as_retry_after_says(
    runtime, worker, make_tenant, receiver
):
    tenant = make_tenant()
    # The first retry's own backoff is 0.5 to 1 s; Retry-After asks for 2 s.
    endpoint = receiver(Answer(429, {"Retry-After": "2"}), Answer(200))
    inv = accept_delivery(runtime, tenant, endpoint.url)
    done = wait_for(finished(runtime, inv.id), timeout=30, what="the delivery")
    assert done.status == "succeeded" and done.attempts == 2
    first, second = runtime.store.invocations.attempts(inv.id)
    assert first.outcome == "retrying" and "429" in first.error["message"]
    assert (second.started_at - first.finished_at).total_seconds() >= 1.5


@pytest.mark.parametrize(
    "change",
    [
        {"url": "ftp://127.0.0.1/hook"},
        {"url": "not a url"},
        {"event": ""},
        {"event": "invoice paid"},
        {"event": "invoice.paid\r\nX-Injected: 1"},
        {"data": ["not", "an", "object"]},
    ],
)
def test_bad_input_is_refused_before_anything_is_stored(runtime, make_tenant, change):
    tenant = make_tenant()
    payload = {"url": "https://example.com/hook", "event": "invoice.paid", "data": {}} | change
    with pytest.raises(InputInvalid):
        runtime.invocations.accept(tenant_id=tenant, function="send_webhook", payload=payload)
    assert runtime.store.invocations.list(tenant)[0] == []


def test_the_function_keeps_its_production_options(runtime):
    fn = runtime.registry.get("send_webhook")
    assert (fn.queue, fn.max_retries, fn.timeout) == ("default", 8, 30)
    assert (fn.min_backoff, fn.max_backoff) == (1, 300)
    assert webhook.CONNECT_TIMEOUT_S + webhook.READ_TIMEOUT_S < fn.timeout


# --- the receiver's helper and the pieces ----------------------------------------------------

SECRET = b"s" * 32
BODY = b'{"id":"d-1","event":"x","data":{},"created_at":"2024-01-01T00:00:00.000Z"}'


def test_a_valid_signature_verifies_and_returns_its_timestamp():
    header = webhook.signature_header(SECRET, 1_700_000_000, BODY)
    assert webhook.verify_signature(BODY, header, SECRET, now=1_700_000_100) == 1_700_000_000


def test_one_matching_signature_among_several_is_enough():
    good = webhook.sign(SECRET, 1_700_000_000, BODY)
    header = f"t=1700000000,v1={'0' * 64},v1={good}"
    assert webhook.verify_signature(BODY, header, SECRET, now=1_700_000_000) == 1_700_000_000


@pytest.mark.parametrize(
    ("body", "header", "secret", "now"),
    [
        # the body was changed
        (BODY + b" ", webhook.signature_header(SECRET, 1_700_000_000, BODY), SECRET, 1_700_000_000),
        # another secret
        (BODY, webhook.signature_header(b"o" * 32, 1_700_000_000, BODY), SECRET, 1_700_000_000),
        # too old, and too far in the future
        (BODY, webhook.signature_header(SECRET, 1_700_000_000, BODY), SECRET, 1_700_000_301),
        (BODY, webhook.signature_header(SECRET, 1_700_000_000, BODY), SECRET, 1_699_999_699),
        # the timestamp was changed after signing
        (
            BODY,
            webhook.signature_header(SECRET, 1_700_000_000, BODY).replace(
                "t=1700000000", "t=1700000001"
            ),
            SECRET,
            1_700_000_000,
        ),
        # malformed headers
        (BODY, "", SECRET, 1_700_000_000),
        (BODY, "v1=abc", SECRET, 1_700_000_000),
        (BODY, "t=1700000000", SECRET, 1_700_000_000),
        (BODY, "t=soon,v1=abc", SECRET, 1_700_000_000),
        (BODY, "t=1700000000,v1=\u00e9", SECRET, 1_700_000_000),
    ],
)
def test_a_bad_signature_is_refused(body, header, secret, now):
    with pytest.raises(webhook.SignatureInvalid):
        webhook.verify_signature(body, header, secret, now=now)


def test_the_tolerance_window_can_be_widened():
    header = webhook.signature_header(SECRET, 1_700_000_000, BODY)
    with pytest.raises(webhook.SignatureInvalid):
        webhook.verify_signature(BODY, header, SECRET, now=1_700_000_900)
    webhook.verify_signature(BODY, header, SECRET, now=1_700_000_900, tolerance_s=900)


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert webhook.retry_after_s("120") == 120
    assert webhook.retry_after_s(" 0 ") == 0
    assert (
        webhook.retry_after_s(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now)
        == 90
    )
    assert (
        webhook.retry_after_s(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    )
    assert webhook.retry_after_s("86400") == webhook.MAX_RETRY_AFTER_S
    for unreadable in (None, "", "soon", "-5", "1.5"):
        assert webhook.retry_after_s(unreadable) is None


def test_delivery_ids_differ_by_tenant_and_by_key_and_repeat_for_the_same_pair():
    one = webhook.delivery_id("acme", "send_webhook", "k1")
    assert one == webhook.delivery_id("acme", "send_webhook", "k1")
    assert one != webhook.delivery_id("other", "send_webhook", "k1")
    assert one != webhook.delivery_id("acme", "send_webhook", "k2")


def test_a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends(receiver):
    now = [datetime.now(UTC)]
    endpoint = receiver(Answer(204))
    with FunctionHarness(
        tenant_id="acme", outbound_allow=LOOPBACK_ALLOWED, clock=lambda: now[0]
    ) as harness:
        old = harness.webhook_secret().secret
        new = harness.rotate_webhook_secret()
        assert new.previous == old and new.secret != old
        harness.run(webhook.send_webhook, event_for(endpoint.url))
        # Past the grace period (a day by default) the old secret no longer signs.
        now[0] += timedelta(days=1, seconds=1)
        assert harness.webhook_secret().previous is None
        harness.run(webhook.send_webhook, event_for(endpoint.url))
    during, after = (r.headers["Ferry-Signature"] for r in endpoint.requests)
    assert during.count("v1=") == 2 and after.count("v1=") == 1
    for secret in (old, new.secret):
        webhook.verify_signature(endpoint.requests[0].body, during, secret)
    webhook.verify_signature(endpoint.requests[1].body, after, new.secret)
    with pytest.raises(webhook.SignatureInvalid):
        webhook.verify_signature(endpoint.requests[1].body, after, old)
