"""Deliver a signed JSON event to a tenant's webhook endpoint.

Input: `url` (http or https), `event` (a name such as `invoice.paid`: printable ASCII,
no spaces) and `data` (any JSON object). Output: the receiver's `status_code`, the
`delivery_id`, the request's `duration_ms` and the `attempt` that delivered it.

The request is `POST <url>` with the JSON body
`{"id": <delivery id>, "event": ..., "data": ..., "created_at": <RFC 3339>}` and these
headers:

- `Ferry-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed
  with the tenant's webhook signing secret (`ctx.webhook_signing_keys()`). Just after the
  secret was rotated, a second `v1=` signs with the previous one, for as long as its
  grace lasts (`FERRY_WEBHOOK_SECRET_GRACE_S`, a day by default).
- `Ferry-Event`: the event name.
- `Ferry-Delivery` and `Idempotency-Key`: the delivery id. It derives from the
  invocation's idempotency key, so every retry of one delivery carries the same id and
  the same body (`created_at` is when the invocation was accepted). A receiver should
  remember the ids it has processed and ignore repeats: a delivery can arrive more than
  once (say, the receiver answered 2xx after Ferry's read timeout ran out).

Outcomes: a 2xx answer succeeds. A 5xx, 408 or 429 answer, a refused or dropped
connection and a timeout (5 s to connect, 20 s to answer) are retried up to 8 times
with exponential backoff from 1 s up to 5 minutes; a `Retry-After` header (seconds or
an HTTP date, capped at an hour) replaces the backoff. Any other answer, including a
redirect, fails at once: the receiver refused the event and sending it again will not
change that. An error's message names the status code only, never the answer's body.

The request goes out through `ctx.http` (runtime/outbound.py): a URL whose host is, or
resolves to, an internal address (loopback, private, link-local such as the cloud
metadata service at `169.254.169.254`, ...) fails at once, before anything is sent,
unless the operator allow-lists it in `FERRY_OUTBOUND_ALLOW`; so does a URL with
`user:password@` in it.

Each tenant has its own random webhook signing secret (`whsec_...`), made on its first
delivery, stored encrypted, and never derived from the server's key. The tenant reads it
with a `manage` key (`GET /v1/webhook-secret`) or an operator with
`ferry secrets webhook --tenant ID`, and rotates it with `POST /v1/webhook-secret/rotate`
or `--rotate`: the new secret signs at once and the previous one keeps signing beside it
through the grace period, so a receiver can switch secrets without refusing a delivery.

Verifying a delivery on the receiving side, where `secret` is that `whsec_...` text:

```
from functions.send_webhook import SignatureInvalid, verify_signature

try:
    verify_signature(request.body, request.headers["Ferry-Signature"], secret)
except SignatureInvalid:
    return 400
```

`verify_signature` recomputes the HMAC over the raw body exactly as received (parse the
JSON only afterwards), compares in constant time, and rejects a timestamp more than
five minutes from the receiver's clock, which stops replays of an old request.
"""

from __future__ import annotations

import email.utils
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, Field, HttpUrl

from runtime import Context, Permanent, Retryable, function
from runtime.signing import (
    SIGNATURE_TOLERANCE_S,
    SignatureInvalid,
    sign,
    signature_header,
    verify_signature,
)

# The signing scheme lives in runtime.signing (completion callbacks use it too); its
# names stay importable from here, where receivers were told to find them.
__all__ = [
    "SIGNATURE_TOLERANCE_S",
    "Input",
    "Output",
    "SignatureInvalid",
    "delivery_id",
    "send_webhook",
    "sign",
    "signature_header",
    "verify_signature",
]

CONNECT_TIMEOUT_S = 5.0
#: Seconds the receiver has to answer once connected; with the connect time it stays
#: below the function's 30 s timeout, so a slow receiver is a retry, not a killed attempt.
READ_TIMEOUT_S = 20.0
#: A longer `Retry-After` is cut to this, so one answer cannot park a delivery for days.
MAX_RETRY_AFTER_S = 3600.0
USER_AGENT = "Ferry-Webhooks/1"
#: Statuses that say "try again later" rather than "no".
RETRYABLE_STATUSES = frozenset({408, 429})
_DELIVERY_IDS = uuid.UUID("5d1c3f0e-6b0a-4f7e-9a55-0c4be1f2d8a1")


class Input(BaseModel):
    url: HttpUrl = Field(description="The receiver's endpoint (http or https).")
    event: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Event name, sent as `Ferry-Event`; printable ASCII, no spaces.",
    )
    data: dict[str, Any] = Field(description="The event's data, sent as the body's `data`.")


class Output(BaseModel):
    status_code: int
    delivery_id: str = Field(description="Sent as `Ferry-Delivery`; the same on every retry.")
    duration_ms: int = Field(description="Time from sending the request to the answer.")
    attempt: int


def delivery_id(tenant_id: str, function_name: str, idempotency_key: str) -> str:
    """The delivery id of one invocation: stable across its retries, unique per tenant."""
    return str(uuid.uuid5(_DELIVERY_IDS, f"{tenant_id}/{function_name}/{idempotency_key}"))


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait; None when absent or unreadable.

    The header is either delta-seconds (`120`) or an HTTP date; the wait is capped at
    `MAX_RETRY_AFTER_S` and a date in the past means "now".
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def encode_event(delivery: str, event: str, data: dict[str, Any], created_at: datetime) -> bytes:
    """The request body, as bytes: what is signed is exactly what is sent."""
    created = created_at.astimezone(UTC)
    document = {
        "id": delivery,
        "event": event,
        "data": data,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{created.microsecond // 1000:03d}Z",
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@function(queue="default", max_retries=8, min_backoff=1, max_backoff=300, timeout=30)
def send_webhook(ctx: Context, payload: Input) -> Output:
    url = str(payload.url)
    host = urlsplit(url).hostname or "?"
    delivery = delivery_id(ctx.tenant_id, ctx.function, ctx.idempotency_key)
    body = encode_event(delivery, payload.event, payload.data, ctx.accepted_at)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Ferry-Signature": signature_header(ctx.webhook_signing_keys(), timestamp, body),
        "Ferry-Event": payload.event,
        "Ferry-Delivery": delivery,
        "Idempotency-Key": delivery,
    }
    # The URL may carry a token in its query string: only the host is logged.
    ctx.log.info("webhook_sending", host=host, webhook_event=payload.event, delivery_id=delivery)
    started = time.monotonic()
    try:
        # ctx.http refuses internal targets (OutboundRefused, permanent) before connecting;
        # the answer's body is never read: only its status and headers matter here.
        response = ctx.http.post(
            url,
            data=body,
            headers=headers,
            timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            allow_redirects=False,
            read_body=False,
        )
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as ex:
        ctx.log.warning("webhook_unreachable", host=host, error_type=type(ex).__name__)
        raise Retryable(f"could not deliver to {host}: {type(ex).__name__}") from ex
    except requests.exceptions.RequestException as ex:
        # What is left is a URL or header requests cannot send at all.
        # The exception's text is left out: it may quote the URL, and with it a token.
        raise Permanent(f"cannot send to {host}: {type(ex).__name__}") from ex
    status = response.status_code
    retry_after = response.headers.get("Retry-After")
    duration_ms = round((time.monotonic() - started) * 1000)

    if 200 <= status < 300:
        ctx.log.info("webhook_delivered", host=host, status_code=status, duration_ms=duration_ms)
        return Output(
            status_code=status, delivery_id=delivery, duration_ms=duration_ms, attempt=ctx.attempt
        )
    ctx.log.warning("webhook_refused", host=host, status_code=status, duration_ms=duration_ms)
    # The status only, never the body: an error answer must not carry a receiver's text
    # (or an internal service's) back to the caller.
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise Retryable(f"{host} answered {status}", delay_s=retry_after_s(retry_after))
    if 300 <= status < 400:
        raise Permanent(f"{host} answered {status}: redirects are not followed; fix the URL")
    raise Permanent(f"{host} answered {status}; not retried")
