"""The transport-free half of both clients: what to send, how to read the answer, when to retry.

`FerryClient` and `AsyncFerryClient` build the same `Call`s, parse answers with the same
functions and follow the same `RetryPlan` and `PollPlan`; only sending and sleeping
differ between them.
"""

from __future__ import annotations

import email.utils
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from .errors import APIError, TransportError, error_for
from .models import (
    BatchAccepted,
    BatchItemResult,
    BatchRefused,
    Invocation,
    InvocationDetail,
    InvocationPage,
    InvocationReceipt,
    Problem,
)

ModelT = TypeVar("ModelT", bound=BaseModel)
ResultT = TypeVar("ResultT")

#: Answers that say "nothing was done, try again later".
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[ResultT]):
    """One API request, how to read its answer, and whether sending it twice is harmless."""

    method: str
    path: str
    parse: Callable[[httpx.Response], ResultT]
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(
            self.method,
            self.path,
            params=self.params or None,
            json=self.json,
            headers=self.headers or None,
        )


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _seconds(value: float) -> str:
    return format(value, "g")


def invoke_call(
    function: str,
    payload: Any,
    *,
    idempotency_key: str | None,
    delay: float | None,
    at: datetime | None,
    wait: float | None,
) -> Call[Invocation | InvocationReceipt]:
    """POST /v1/functions/{function}/invocations; the key defaults to a new UUID."""
    params: dict[str, str] = {}
    if wait is not None:
        params["wait"] = _seconds(wait)
    if delay is not None:
        params["delay"] = _seconds(delay)
    if at is not None:
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware")
        params["at"] = at.isoformat()
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    return Call(
        "POST",
        f"/v1/functions/{_quote(function)}/invocations",
        params=params,
        json=payload,
        headers={"Idempotency-Key": key},
        # The key makes a repeated POST return the first invocation: one execution.
        idempotent=True,
        parse=parse_invoked,
    )


#: The most inputs one batch may carry.
MAX_BATCH = 1000


def invoke_batch_call(
    function: str, inputs: Sequence[Any], idempotency_keys: Sequence[str] | None
) -> Call[list[BatchItemResult]]:
    """POST /v1/functions/{function}/invocations/batch; each key defaults to a new UUID."""
    if not 1 <= len(inputs) <= MAX_BATCH:
        raise ValueError(f"a batch has from 1 to {MAX_BATCH} inputs; got {len(inputs)}")
    if idempotency_keys is None:
        idempotency_keys = [str(uuid.uuid4()) for _ in inputs]
    if len(idempotency_keys) != len(inputs):
        raise ValueError("give one idempotency key per input")
    items = [
        {"input": payload, "idempotency_key": key}
        for payload, key in zip(inputs, idempotency_keys, strict=True)
    ]
    return Call(
        "POST",
        f"/v1/functions/{_quote(function)}/invocations/batch",
        json={"items": items},
        # Every item has a key: sending the batch again replays what was stored.
        idempotent=True,
        parse=parse_batch,
    )


def parse_batch(response: httpx.Response) -> list[BatchItemResult]:
    """A batch's answer: one result per input, in order."""
    raise_for_problem(response)
    body = response.json()
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        problem = Problem(
            status=response.status_code,
            title="Unexpected answer",
            detail="the body of a batch answer has no items",
        )
        raise APIError(problem, request_id=response.headers.get("X-Request-ID"))
    results: list[BatchItemResult] = []
    for item in items:
        accepted = isinstance(item, dict) and "id" in item
        try:
            model = BatchAccepted if accepted else BatchRefused
            results.append(model.model_validate(item))
        except ValidationError as error:
            problem = Problem(
                status=response.status_code,
                title="Unexpected answer",
                detail=f"an item of the batch answer is not valid: {error}",
            )
            raise APIError(problem, request_id=response.headers.get("X-Request-ID")) from error
    return results


def get_call(invocation_id: str) -> Call[InvocationDetail]:
    return Call(
        "GET",
        f"/v1/invocations/{_quote(invocation_id)}",
        idempotent=True,
        parse=lambda response: parse_model(response, InvocationDetail),
    )


def list_call(
    *, function: str | None, status: str | None, limit: int | None, cursor: str | None
) -> Call[InvocationPage]:
    given = {"function": function, "status": status, "limit": limit, "cursor": cursor}
    params = {name: str(value) for name, value in given.items() if value is not None}
    return Call(
        "GET",
        "/v1/invocations",
        params=params,
        idempotent=True,
        parse=lambda response: parse_model(response, InvocationPage),
    )


def cancel_call(invocation_id: str) -> Call[Invocation]:
    return Call(
        "POST",
        f"/v1/invocations/{_quote(invocation_id)}/cancel",
        parse=lambda response: parse_model(response, Invocation),
    )


def retry_call(invocation_id: str) -> Call[Invocation]:
    return Call(
        "POST",
        f"/v1/invocations/{_quote(invocation_id)}/retry",
        parse=lambda response: parse_model(response, Invocation),
    )


def parse_model(response: httpx.Response, model: type[ModelT]) -> ModelT:
    """The answer's body as `model`, or the typed error of a problem answer."""
    raise_for_problem(response)
    try:
        return model.model_validate_json(response.content)
    except ValidationError as error:
        problem = Problem(
            status=response.status_code,
            title="Unexpected answer",
            detail=f"the body is not a valid {model.__name__}: {error}",
        )
        raise APIError(problem, request_id=response.headers.get("X-Request-ID")) from error


def parse_invoked(response: httpx.Response) -> Invocation | InvocationReceipt:
    """An invoke's answer: the invocation, or only its id and status (a key without `read`)."""
    raise_for_problem(response)
    body = response.json()
    if isinstance(body, dict) and "function" not in body:
        return parse_model(response, InvocationReceipt)
    return parse_model(response, Invocation)


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the typed error of a 4xx/5xx answer; do nothing for a success."""
    if response.status_code < 400:
        return
    try:
        problem = Problem.model_validate_json(response.content)
    except ValidationError:
        # Not problem+json (a proxy's page, say): keep the status and the start of the text.
        problem = Problem(
            status=response.status_code,
            title=response.reason_phrase,
            detail=response.text[:500],
        )
    raise error_for(
        problem,
        request_id=response.headers.get("X-Request-ID"),
        retry_after=retry_after(response),
    )


@dataclass
class RetryPlan:
    """When to send a call again: after 429/503 (honouring `Retry-After`), and after a
    connection failure if the call is idempotent or was never sent.

    `max_retries` bounds the extra attempts; without `Retry-After` the delay backs off
    exponentially from `backoff` with full jitter, never over `max_delay`.
    """

    max_retries: int = 3
    backoff: float = 0.5
    max_delay: float = 30.0
    retries: int = 0

    def after_response(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again, or None to take this answer."""
        if response.status_code not in RETRY_STATUSES or self.retries >= self.max_retries:
            return None
        self.retries += 1
        told = retry_after(response)
        if told is not None:
            # Spread clients told the same instant over a tenth of the wait.
            return min(self.max_delay, told * (1 + random.random() / 10))
        return self._backoff()

    def after_error(self, call: Call[Any], error: httpx.TransportError) -> float:
        """Seconds to wait before sending again; raises if the call must not be repeated."""
        # A refused connection never carried the request: resending it cannot run it twice.
        never_sent = isinstance(
            error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
        )
        if not (call.idempotent or never_sent) or self.retries >= self.max_retries:
            raise TransportError(f"{call.method} {call.path}: {error}") from error
        self.retries += 1
        return self._backoff()

    def _backoff(self) -> float:
        ceiling = min(self.max_delay, self.backoff * 2 ** (self.retries - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class PollPlan:
    """How `wait` polls an invocation: from `first` seconds, doubling up to `longest`,
    until `timeout` seconds have passed."""

    timeout: float
    first: float = 0.1
    longest: float = 2.0
    started: float = field(default_factory=time.monotonic)
    interval: float = 0.0

    def next_delay(self) -> float | None:
        """Seconds to sleep before the next look, or None when the time is up."""
        left = self.timeout - (time.monotonic() - self.started)
        if left <= 0:
            return None
        self.interval = min(self.longest, self.interval * 2 if self.interval else self.first)
        return min(self.interval, left)


def client_headers(api_key: str, tenant_id: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    if tenant_id is not None:
        # Operator keys act for one tenant at a time.
        headers["X-Tenant-ID"] = tenant_id
    return headers
