"""The client behind `ctx.http`: `requests` with connections that check their address.

`GuardedHTTPConnection` resolves the host itself, checks every address it got
(`OutboundPolicy.resolve`) and connects to a checked address, so a name that resolves
to a public address when asked and to an internal one a moment later (DNS rebinding)
cannot slip through. The URL of every request, the first and each redirect, is checked
too (http(s) only, no `user:password@`), all before any byte is sent. Timeouts are
always set and the answer's body is read up to a cap. Proxies from the environment and
`.netrc` credentials are not used.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager

from runtime.errors import OutboundRefused, ResponseTooLarge
from runtime.outbound.policy import OutboundPolicy

Timeout = float | tuple[float, float]

MAX_REDIRECTS = 5
_CHUNK = 65_536


def _guarded_connect(conn: HTTPConnection, policy: OutboundPolicy) -> socket.socket:
    """`HTTPConnection._new_conn`, connecting only to addresses the policy checked."""
    try:
        targets = policy.resolve(conn._dns_host, conn.port)
    except socket.gaierror as ex:
        raise NameResolutionError(conn.host, conn, ex) from ex
    failure: OSError = OSError("the name resolved to no address")
    for family, sockaddr in targets:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if isinstance(conn.timeout, int | float):
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
        except OSError as ex:
            sock.close()
            failure = ex
            continue
        sys.audit("http.client.connect", conn, conn.host, conn.port)
        return sock
    if isinstance(failure, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from failure
    raise NewConnectionError(conn, f"Failed to establish a new connection: {failure}") from failure


class GuardedHTTPConnection(HTTPConnection):
    """An HTTP connection that connects only to addresses its policy allows."""

    def __init__(self, *args: Any, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy

    def _new_conn(self) -> socket.socket:
        return _guarded_connect(self, self.policy)


class GuardedHTTPSConnection(HTTPSConnection):
    """An HTTPS connection that connects only to addresses its policy allows.

    TLS still verifies the certificate against the URL's host name, not the address.
    """

    def __init__(self, *args: Any, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy

    def _new_conn(self) -> socket.socket:
        return _guarded_connect(self, self.policy)


class _GuardedPoolManager(PoolManager):
    """Pools whose connections are the guarded ones."""

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = GuardedHTTPSConnection if scheme == "https" else GuardedHTTPConnection
        pool.conn_kw["policy"] = self.policy
        return pool


class _GuardedAdapter(HTTPAdapter):
    """Checks each request's URL (the first and every redirect) before sending it."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self.poolmanager = _GuardedPoolManager(
            self.policy, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise OutboundRefused("refused: outbound requests do not go through a proxy")

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.policy.check_url(request.url or "")
        return super().send(request, *args, **kwargs)


def _skip_redirect_body(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """Close a redirect's answer unread: requests would read all of it before following."""
    if response.is_redirect:
        response.raw.close()


class OutboundClient:
    """`ctx.http`: `request`, `get` and `post`, returning a `requests.Response` read in full.

    Errors are those of `requests` (`ConnectionError`, `Timeout`, ...), plus
    `OutboundRefused` for a target the policy refuses and `ResponseTooLarge`.
    """

    def __init__(self, policy: OutboundPolicy | None = None) -> None:
        self.policy = policy or OutboundPolicy()
        self._session = requests.Session()
        # No proxies from the environment, no .netrc credentials.
        self._session.trust_env = False
        self._session.max_redirects = MAX_REDIRECTS
        # Every URL, whatever its scheme, goes to the adapter that checks it.
        self._session.adapters.clear()
        self._session.mount("", _GuardedAdapter(self.policy))

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: Timeout | None = None,
        allow_redirects: bool = True,
        max_bytes: int | None = None,
        read_body: bool = True,
    ) -> requests.Response:
        """Send one request (following up to 5 redirects) and read its answer.

        `timeout` is seconds, or (connect, read); None takes the settings'. The body is
        read up to `max_bytes` (at most `FERRY_OUTBOUND_MAX_RESPONSE_BYTES`); with
        `read_body=False` it is not read at all (`content` is empty).
        """
        self.policy.check_url(url)
        response = self._session.request(
            method,
            url,
            params=params,
            headers=headers,
            data=data,
            json=json,
            timeout=timeout or (self.policy.connect_timeout_s, self.policy.read_timeout_s),
            allow_redirects=allow_redirects,
            stream=True,
            hooks={"response": [_skip_redirect_body]} if allow_redirects else None,
        )
        limit = min(max_bytes or self.policy.max_response_bytes, self.policy.max_response_bytes)
        try:
            body = _read_capped(response, limit) if read_body else b""
        finally:
            response.close()
        response._content = body
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._session.close()


def _read_capped(response: requests.Response, limit: int) -> bytes:
    """The answer's body, or `ResponseTooLarge` as soon as it passes `limit` bytes."""
    host = urlsplit(response.url).hostname or "?"
    too_large = ResponseTooLarge(
        f"refused: the answer from {host} is over {limit} bytes (FERRY_OUTBOUND_MAX_RESPONSE_BYTES)"
    )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
