"""`FerryClient` (blocking, httpx.Client) and `AsyncFerryClient` (asyncio, httpx.AsyncClient).

Both build their requests, read the answers and decide on retries with the same code in
`_protocol`; each only sends and sleeps in its own way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypedDict, TypeVar, Unpack

import httpx

from . import _protocol as protocol
from .errors import WaitTimeout
from .models import (
    BatchItemResult,
    Invocation,
    InvocationDetail,
    InvocationPage,
    InvocationReceipt,
    Status,
)

ResultT = TypeVar("ResultT")

DEFAULT_TIMEOUT_S = 60.0


class ClientOptions(TypedDict, total=False):
    """Options of both clients.

    `tenant_id`: sent as `X-Tenant-ID`, for operator keys. `timeout`: seconds for one
    request (default 60: a `?wait` invoke holds it up to 30). `max_retries`: extra
    attempts after 429, 503 or a connection failure (default 3). `backoff`: the first
    retry delay when the answer has no `Retry-After` (default 0.5 s, doubling, jittered).
    """

    tenant_id: str | None
    timeout: float
    max_retries: int
    backoff: float


class _Settings:
    """What both clients are made with."""

    def __init__(self, base_url: str, api_key: str, **options: Unpack[ClientOptions]) -> None:
        timeout = options.get("timeout", DEFAULT_TIMEOUT_S)
        self.options: dict[str, Any] = {
            "base_url": base_url.rstrip("/"),
            "headers": protocol.client_headers(api_key, options.get("tenant_id")),
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        }
        self.max_retries = options.get("max_retries", 3)
        self.backoff = options.get("backoff", 0.5)

    def retry_plan(self) -> protocol.RetryPlan:
        return protocol.RetryPlan(max_retries=self.max_retries, backoff=self.backoff)


class FerryClient:
    """A blocking client of the Ferry API for one API key.

    ```python
    with FerryClient("http://127.0.0.1:8000", api_key) as ferry:
        accepted = ferry.invoke("echo_time", {"message": "hi"})
        done = ferry.wait(accepted.id, timeout=30)
    ```

    Options are `ClientOptions`. Answers 429 and 503 are retried up to `max_retries`
    times, honouring `Retry-After`; so are connection failures of GETs and of invokes
    (which always carry an idempotency key). `transport` is httpx's, for tests and proxies.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._settings = _Settings(base_url, api_key, **options)
        self._http = httpx.Client(transport=transport, **self._settings.options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: protocol.Call[ResultT]) -> ResultT:
        plan = self._settings.retry_plan()
        while True:
            try:
                response = self._http.send(call.request(self._http))
            except httpx.TransportError as error:
                time.sleep(plan.after_error(call, error))
                continue
            delay = plan.after_response(response)
            if delay is None:
                return call.parse(response)
            time.sleep(delay)

    def invoke(
        self,
        function: str,
        input: Any,
        *,
        idempotency_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        wait: float | None = None,
    ) -> Invocation | InvocationReceipt:
        """Invoke `function` with `input` (any JSON value the function accepts).

        `idempotency_key` defaults to a new UUID, so the client's own retries can never
        run it twice; pass your own to make retries across processes safe too. `delay`
        (seconds) or `at` (aware datetime) run it later; `wait` (0 to 30 s) holds the
        request until it finishes. A key without `read` gets an `InvocationReceipt` back
        for a replay.
        """
        return self._send(
            protocol.invoke_call(
                function, input, idempotency_key=idempotency_key, delay=delay, at=at, wait=wait
            )
        )

    def invoke_batch(
        self,
        function: str,
        inputs: Sequence[Any],
        idempotency_keys: Sequence[str] | None = None,
    ) -> list[BatchItemResult]:
        """Invoke `function` once per input (1 to 1,000) in one request.

        One result per input, in order: `BatchAccepted` (its id; `replayed` if its key
        was stored before with the same input) or `BatchRefused` (its own errors; nothing
        stored for it). Each key defaults to a new UUID, so the client's own retries never
        store an input twice. A limit refuses the whole batch (`RateLimited`).
        """
        return self._send(protocol.invoke_batch_call(function, inputs, idempotency_keys))

    def get(self, invocation_id: str) -> InvocationDetail:
        """One invocation with its attempt log."""
        return self._send(protocol.get_call(invocation_id))

    def wait(self, invocation_id: str, timeout: float = 60.0) -> InvocationDetail:
        """Poll until the invocation is succeeded, failed or cancelled; `WaitTimeout` after `timeout` s."""
        plan = protocol.PollPlan(timeout)
        while True:
            invocation = self.get(invocation_id)
            if invocation.finished:
                return invocation
            delay = plan.next_delay()
            if delay is None:
                raise WaitTimeout(invocation_id, invocation.status, timeout)
            time.sleep(delay)

    def cancel(self, invocation_id: str) -> Invocation:
        """Cancel an invocation that has not started; `Conflict` once it has."""
        return self._send(protocol.cancel_call(invocation_id))

    def retry(self, invocation_id: str) -> Invocation:
        """Queue a failed or cancelled invocation again."""
        return self._send(protocol.retry_call(invocation_id))

    def list_page(
        self,
        *,
        function: str | None = None,
        status: Status | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> InvocationPage:
        """One page of invocations, newest first."""
        return self._send(
            protocol.list_call(function=function, status=status, limit=limit, cursor=cursor)
        )

    def list(
        self,
        *,
        function: str | None = None,
        status: Status | None = None,
        page_size: int | None = None,
    ) -> Iterator[Invocation]:
        """Every invocation that matches, newest first, fetching page after page as it goes."""
        cursor: str | None = None
        while True:
            page = self.list_page(function=function, status=status, limit=page_size, cursor=cursor)
            yield from page.invocations
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


class AsyncFerryClient:
    """The asyncio twin of `FerryClient`: the same methods, awaited.

    ```python
    async with AsyncFerryClient("http://127.0.0.1:8000", api_key) as ferry:
        accepted = await ferry.invoke("echo_time", {"message": "hi"})
        done = await ferry.wait(accepted.id, timeout=30)
        async for invocation in ferry.list(status="failed"):
            ...
    ```
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._settings = _Settings(base_url, api_key, **options)
        self._http = httpx.AsyncClient(transport=transport, **self._settings.options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: protocol.Call[ResultT]) -> ResultT:
        plan = self._settings.retry_plan()
        while True:
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.TransportError as error:
                await asyncio.sleep(plan.after_error(call, error))
                continue
            delay = plan.after_response(response)
            if delay is None:
                return call.parse(response)
            await asyncio.sleep(delay)

    async def invoke(
        self,
        function: str,
        input: Any,
        *,
        idempotency_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        wait: float | None = None,
    ) -> Invocation | InvocationReceipt:
        """See `FerryClient.invoke`."""
        return await self._send(
            protocol.invoke_call(
                function, input, idempotency_key=idempotency_key, delay=delay, at=at, wait=wait
            )
        )

    async def invoke_batch(
        self,
        function: str,
        inputs: Sequence[Any],
        idempotency_keys: Sequence[str] | None = None,
    ) -> list[BatchItemResult]:
        """See `FerryClient.invoke_batch`."""
        return await self._send(protocol.invoke_batch_call(function, inputs, idempotency_keys))

    async def get(self, invocation_id: str) -> InvocationDetail:
        """One invocation with its attempt log."""
        return await self._send(protocol.get_call(invocation_id))

    async def wait(self, invocation_id: str, timeout: float = 60.0) -> InvocationDetail:
        """See `FerryClient.wait`."""
        plan = protocol.PollPlan(timeout)
        while True:
            invocation = await self.get(invocation_id)
            if invocation.finished:
                return invocation
            delay = plan.next_delay()
            if delay is None:
                raise WaitTimeout(invocation_id, invocation.status, timeout)
            await asyncio.sleep(delay)

    async def cancel(self, invocation_id: str) -> Invocation:
        """Cancel an invocation that has not started; `Conflict` once it has."""
        return await self._send(protocol.cancel_call(invocation_id))

    async def retry(self, invocation_id: str) -> Invocation:
        """Queue a failed or cancelled invocation again."""
        return await self._send(protocol.retry_call(invocation_id))

    async def list_page(
        self,
        *,
        function: str | None = None,
        status: Status | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> InvocationPage:
        """One page of invocations, newest first."""
        return await self._send(
            protocol.list_call(function=function, status=status, limit=limit, cursor=cursor)
        )

    async def list(
        self,
        *,
        function: str | None = None,
        status: Status | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Invocation]:
        """See `FerryClient.list`."""
        cursor: str | None = None
        while True:
            page = await self.list_page(
                function=function, status=status, limit=page_size, cursor=cursor
            )
            for invocation in page.invocations:
                yield invocation
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
