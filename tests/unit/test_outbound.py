"""`ctx.http` and `send_webhook` cannot reach internal addresses (runtime/outbound).

Packets go to loopback only. DNS is stubbed: `internal.example` resolves to 10.0.0.1,
`metadata.google.internal` to 169.254.169.254 and `public.example` to 203.0.113.10 (a
TEST-NET address standing in for the internet). Every socket connect is watched: one to
203.0.113.10 is carried to a loopback listener playing the public server, and any other
non-loopback connect fails the test before it is made. Each listener counts the
connections it accepts, so "refused before any byte is sent" is checked as "the
listener saw no connection".
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from pydantic import BaseModel

from functions import send_webhook as webhook
from runtime import Permanent, function
from runtime.errors import OutboundRefused, ResponseTooLarge, SettingsInvalid
from runtime.outbound import OutboundClient, OutboundPolicy, parse_allow_entry, refusal_rule
from runtime.outbound.policy import AllowEntry
from runtime.settings import Settings
from runtime.testing import FunctionHarness
from tests.waiting import finished, wait_for

PUBLIC_IP = "203.0.113.10"
STUB_DNS = {
    "internal.example": ["10.0.0.1"],
    "metadata.google.internal": ["169.254.169.254"],
    "public.example": [PUBLIC_IP],
    "mixed.example": [PUBLIC_IP, "10.0.0.1"],
    "hooks.internal": ["127.0.0.1"],
}
_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect


class Listener:
    """An HTTP server on 127.0.0.1 that counts accepted connections and answers a script."""

    def __init__(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: bytes = b"hello",
        delay_s: float = 0.0,
        length: bool = True,
    ) -> None:
        self.connections = 0
        listener = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                accepted = super().get_request()
                listener.connections += 1
                return accepted

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that stops reading at the size cap breaks the pipe

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                if delay_s:
                    time.sleep(delay_s)
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.answer()

            do_GET = answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(*args: Any, **kwargs: Any) -> Listener:
        started.append(Listener(*args, **kwargs))
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture(autouse=True)
def network(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, int], int]:
    """Stub DNS; carry connects to the public stand-in to loopback; fail any other.

    Returns the routes of the public stand-in: (203.0.113.10, port) -> loopback port.
    """
    routes: dict[tuple[str, int], int] = {}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = str(host).lower().rstrip(".")
        if name in STUB_DNS:
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, int(port or 0)),
                )
                for ip in STUB_DNS[name]
            ]
        try:
            ipaddress.ip_address(name.strip("[]").split("%")[0])
        except ValueError:
            # localhost and numeric forms (2130706433) resolve without asking DNS
            if name != "localhost" and not _numeric(name):
                raise socket.gaierror(
                    socket.EAI_NONAME, f"{name} is not in the test's DNS"
                ) from None
        return _real_getaddrinfo(host, port, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = str(address[0]), int(address[1])
            if (host, port) in routes:
                address = ("127.0.0.1", routes[host, port])
            elif not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                pytest.fail(f"a connection to {host}:{port} was attempted")
        _real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return routes


def _numeric(name: str) -> bool:
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


def client(*allow: str, **options: Any) -> OutboundClient:
    entries = tuple(parse_allow_entry(entry) for entry in allow)
    return OutboundClient(OutboundPolicy(allow=entries, **options))


# --- refused before any byte is sent ----------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("http://127.0.0.1:{port}/", r"127\.0\.0\.1 is a loopback address"),
        ("http://localhost:{port}/", "localhost resolves to a loopback address"),
        ("http://[::1]:{port}/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/", r"::ffff:127\.0\.0\.1 is a loopback address"),
        ("http://2130706433:{port}/", "2130706433 resolves to a loopback address"),
        ("http://0x7f.1:{port}/", "a loopback address"),
        ("http://0.0.0.0:{port}/", "the unspecified address"),
        ("http://internal.example:{port}/", "internal.example resolves to a private address"),
        ("http://mixed.example:{port}/", "mixed.example resolves to a private address"),
        ("http://169.254.169.254/latest/meta-data/", "is a link-local address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a link-local address"),
        ("https://internal.example/", "a private address"),
    ],
)
def test_internal_targets_are_refused_before_connecting(listen, target, rule):
    # Given a listener on loopback
    listener = listen()
    # When ctx.http is asked for an internal target, Then it refuses, permanently, naming
    # the rule and the setting that would permit it
    with pytest.raises(OutboundRefused, match=rule) as refused:
        client().get(target.format(port=listener.port))
    assert isinstance(refused.value, Permanent)
    assert "FERRY_OUTBOUND_ALLOW" in str(refused.value)
    # And the resolved address of a name is not told to the caller
    assert "10.0.0.1" not in str(refused.value)
    # And nothing reached the listener
    assert listener.connections == 0


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("http://user:pw@127.0.0.1:{port}/", "credentials in the URL"),
        ("http://token@127.0.0.1:{port}/", "credentials in the URL"),
        ("ftp://127.0.0.1:{port}/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_credentials_in_the_url_and_other_schemes_are_refused(listen, target, rule):
    listener = listen()
    with pytest.raises(OutboundRefused, match=rule) as refused:
        client("127.0.0.1").get(target.format(port=listener.port))
    assert "pw" not in str(refused.value)
    assert listener.connections == 0


def test_an_allow_listed_loopback_target_works_end_to_end(listen):
    listener = listen(body=b"from loopback")
    response = client("127.0.0.1").get(f"http://127.0.0.1:{listener.port}/x")
    assert response.status_code == 200 and response.content == b"from loopback"
    assert client(f"127.0.0.0/8:{listener.port}").post(
        f"http://127.0.0.1:{listener.port}/", json={"a": 1}
    ).text == ("from loopback")


def test_an_allow_listed_host_name_permits_what_it_resolves_to(listen):
    listener = listen()
    url = f"http://hooks.internal:{listener.port}/"
    assert client("hooks.internal").get(url).status_code == 200
    # On another port only if the entry names no port
    with pytest.raises(OutboundRefused, match=r"hooks\.internal resolves to a loopback"):
        client(f"hooks.internal:{listener.port + 1}").get(url)


def test_a_redirect_to_a_port_that_is_not_allowed_is_refused(listen):
    # Given an allowed server that redirects to another loopback port, not allowed
    inner = listen(body=b"internal secret")
    outer = listen(302, {"Location": f"http://127.0.0.1:{inner.port}/admin"})
    # When it is fetched, Then the redirect is refused and the other port saw nothing
    with pytest.raises(OutboundRefused, match="loopback"):
        client(f"127.0.0.1:{outer.port}").get(f"http://127.0.0.1:{outer.port}/")
    assert outer.connections == 1 and inner.connections == 0
    # And with both ports allowed the same redirect is followed
    both = client(f"127.0.0.1:{outer.port}", f"127.0.0.1:{inner.port}")
    assert both.get(f"http://127.0.0.1:{outer.port}/").content == b"internal secret"


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://internal.example:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://user:pw@public.example/",
        "gopher://127.0.0.1:{port}/",
    ],
)
def test_a_public_name_that_redirects_inside_is_refused(listen, network, location):
    # Given public.example (203.0.113.10), played by a loopback listener, redirecting inside
    inner = listen(body=b"internal secret")
    public = listen(302, {"Location": location.format(port=inner.port)})
    network[PUBLIC_IP, 80] = public.port
    # When ctx.http follows it, Then the redirect is refused and the inside saw nothing
    with pytest.raises(OutboundRefused):
        client().get("http://public.example/start")
    assert public.connections == 1 and inner.connections == 0


def test_the_address_connected_is_the_address_checked(listen, network, monkeypatch):
    # Given a name that answers a public address first and loopback afterwards (rebinding)
    public = listen(body=b"public")
    network[PUBLIC_IP, 80] = public.port
    answers = iter([[PUBLIC_IP]])
    stubbed = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            STUB_DNS["rebind.example"] = next(answers, ["127.0.0.1"])
        return stubbed(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setitem(STUB_DNS, "rebind.example", [])
    # When it is fetched twice, Then the first connects to the address it checked
    assert client().get("http://rebind.example/").content == b"public"
    # And the second, now resolving to loopback, is refused
    with pytest.raises(OutboundRefused, match=r"rebind\.example resolves to a loopback"):
        client().get("http://rebind.example/")


def test_proxies_from_the_environment_are_not_used(listen, monkeypatch):
    listener = listen()
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("http_proxy", "http://10.0.0.1:3128")
    assert client("127.0.0.1").get(f"http://127.0.0.1:{listener.port}/").status_code == 200


# --- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [True, False])
def test_an_answer_over_the_size_cap_fails(listen, length):
    listener = listen(body=b"x" * 5000, length=length)
    url = f"http://127.0.0.1:{listener.port}/"
    with pytest.raises(ResponseTooLarge, match="over 1000 bytes") as too_large:
        client("127.0.0.1", max_response_bytes=1000).get(url)
    assert isinstance(too_large.value, Permanent)
    assert len(client("127.0.0.1", max_response_bytes=5000).get(url).content) == 5000
    # A request may ask for less than the cap, never for more
    with pytest.raises(ResponseTooLarge):
        client("127.0.0.1").get(url, max_bytes=100)
    with pytest.raises(ResponseTooLarge):
        client("127.0.0.1", max_response_bytes=1000).get(url, max_bytes=10_000)


def test_a_followed_redirects_body_is_not_read(listen):
    # Given a redirect with a body over the cap, to an answer under it
    inner = listen(body=b"small")
    outer = listen(302, {"Location": f"http://127.0.0.1:{inner.port}/"}, body=b"x" * 5000)
    capped = client("127.0.0.1", max_response_bytes=1000)
    # When it is followed, Then only the final answer counts
    assert capped.get(f"http://127.0.0.1:{outer.port}/").content == b"small"
    # And unfollowed, the redirect's own answer is read (and capped) like any other
    with pytest.raises(ResponseTooLarge):
        capped.get(f"http://127.0.0.1:{outer.port}/", allow_redirects=False)
    unfollowed = client("127.0.0.1").get(f"http://127.0.0.1:{outer.port}/", allow_redirects=False)
    assert unfollowed.status_code == 302 and len(unfollowed.content) == 5000


def test_the_read_timeout_of_the_settings_applies_without_one_given(listen):
    listener = listen(delay_s=2)
    slow = client("127.0.0.1", connect_timeout_s=1, read_timeout_s=0.2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        slow.get(f"http://127.0.0.1:{listener.port}/")


# --- the allow list and the rules ----------------------------------------------------------------


def test_allow_list_entries_parse_and_bad_ones_name_the_setting():
    assert parse_allow_entry("10.0.0.0/8") == AllowEntry(ipaddress.ip_network("10.0.0.0/8"))
    assert parse_allow_entry("[::1]:8080") == AllowEntry(ipaddress.ip_network("::1"), port=8080)
    assert parse_allow_entry("Hooks.Internal.:443") == AllowEntry(host="hooks.internal", port=443)
    assert parse_allow_entry("fd00::/8").network == ipaddress.ip_network("fd00::/8")
    settings = Settings.from_env(outbound_allow=" 127.0.0.1:9000 , hooks.internal,")
    assert settings.outbound_allow == ("127.0.0.1:9000", "hooks.internal")
    for bad in ("not a host", "127.0.0.1:0", "host:99999", "[::1", "*.example"):
        with pytest.raises(SettingsInvalid, match="FERRY_OUTBOUND_ALLOW"):
            Settings.from_env(outbound_allow=bad)


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.5", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a private address"),
        ("fd12::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("64:ff9b::a9fe:a9fe", "a link-local address"),
        ("2002:7f00:1::", "a loopback address"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        (PUBLIC_IP, None),
    ],
)
def test_address_rules(address, rule):
    assert refusal_rule(ipaddress.ip_address(address)) == rule


# --- through a function: ctx.http and send_webhook ------------------------------------------------


class FetchInput(BaseModel):
    url: str


class FetchOutput(BaseModel):
    status_code: int
    text: str


@function
def fetch(ctx: Any, payload: FetchInput) -> FetchOutput:
    response = ctx.http.get(payload.url)
    return FetchOutput(status_code=response.status_code, text=response.text)


INTERNAL_URLS = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://internal.example:{port}/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://public.example/redirects-inside",
]


@pytest.fixture
def inside(listen, network) -> tuple[Listener, Callable[[str], str]]:
    """A loopback listener, and public.example redirecting to it; URL formatter."""
    listener = listen(400, body=b"internal service text")
    public = listen(307, {"Location": f"http://127.0.0.1:{listener.port}/hook"})
    network[PUBLIC_IP, 80] = public.port
    return listener, lambda url: url.format(port=listener.port)


@pytest.mark.parametrize("target", INTERNAL_URLS)
def test_a_function_calling_ctx_http_inside_fails_permanently(inside, target):
    listener, url = inside
    with FunctionHarness(tenant_id="acme") as harness, pytest.raises(OutboundRefused):
        harness.run(fetch, {"url": url(target)})
    assert listener.connections == 0


def test_a_function_calling_an_allowed_loopback_target_works(listen):
    listener = listen(body=b"ok")
    with FunctionHarness(tenant_id="acme", outbound_allow=["127.0.0.1"]) as harness:
        out = harness.run(fetch, {"url": f"http://127.0.0.1:{listener.port}/"})
    assert (out.status_code, out.text) == (200, "ok")


@pytest.mark.parametrize("target", [*INTERNAL_URLS, "http://user:pw@public.example/"])
def test_send_webhook_to_an_internal_target_fails_permanently_unsent(inside, target):
    listener, url = inside
    # (A webhook follows no redirect: public.example's answer fails it, permanently.)
    with FunctionHarness(tenant_id="acme") as harness, pytest.raises(Permanent) as refused:
        harness.run(webhook.send_webhook, {"url": url(target), "event": "e", "data": {}})
    assert listener.connections == 0
    if "redirects" not in target:
        assert isinstance(refused.value, OutboundRefused)
    assert "internal service text" not in str(refused.value)


def test_send_webhook_does_not_echo_an_error_answers_body(listen):
    listener = listen(400, body=b"internal service text")
    with FunctionHarness(tenant_id="acme", outbound_allow=["127.0.0.1"]) as harness:
        with pytest.raises(Permanent, match="answered 400") as refused:
            harness.run(
                webhook.send_webhook,
                {"url": f"http://127.0.0.1:{listener.port}/", "event": "e", "data": {}},
            )
    assert "internal service text" not in str(refused.value)


@pytest.mark.parametrize("backend", ["embedded"])
def test_send_webhook_through_the_runtime_to_loopback_fails_at_once(
    runtime, worker, make_tenant, listen
):
    # Given a worker with the default settings (nothing internal allowed)
    listener = listen()
    tenant = make_tenant()
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant,
        function="send_webhook",
        payload={"url": f"http://127.0.0.1:{listener.port}/", "event": "e", "data": {}},
    )
    # When it runs, Then it fails on the first attempt, naming the rule, and sent nothing
    done = wait_for(finished(runtime, inv.id), what="the refused delivery")
    assert done.status == "failed" and done.attempts == 1
    assert done.error["type"] == "OutboundRefused"
    assert "127.0.0.1 is a loopback address" in done.error["message"]
    assert listener.connections == 0
