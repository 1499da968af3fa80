"""Query parameters and headers of the API, parsed strictly: a bad value answers 400.

Numbers go through Falcon's own `get_param_as_*` helpers; their `HTTPInvalidParam` becomes
the `BadRequest` every caller expects (the API answers it as a `bad-request` problem, the
dashboard as its own 400 page). The patterns and bounds here are also what /openapi.json
documents for each parameter.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import falcon

from runtime.callbacks.urls import MAX_CALLBACK_URL_LENGTH
from runtime.errors import BadRequest
from runtime.services.invocation_values import (
    IDEMPOTENCY_KEY_RULE,
    key_is_well_formed,
)
from runtime.store.models import Status

#: RFC 3339 date-time; the offset is required ("Z" or "+hh:mm").
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
#: A page cursor is unpadded base64url (what `next_cursor` holds).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
STATUSES = tuple(status.value for status in Status)
#: components/parameters' `CallbackUrl`: the header an invocation's callback URL comes in.
CALLBACK_URL_PARAMETER = (
    "Ferry-Callback-URL",
    "header",
    {"type": "string", "format": "uri", "maxLength": MAX_CALLBACK_URL_LENGTH},
    "An http(s) URL to POST the invocation to, signed like webhooks (`Ferry-Signature`), "
    "once it finishes (succeeded, failed or cancelled); it replaces the function's own "
    "callback URL, if it has one. A malformed URL is a 400. Delivery is retried with "
    "backoff; an internal address is refused unless FERRY_OUTBOUND_ALLOW permits it. "
    "GET /v1/invocations/{invocation_id} shows how delivery went (`callback`). "
    "See docs/callbacks.md.",
)


@contextlib.contextmanager
def _bad_request() -> Iterator[None]:
    try:
        yield
    except falcon.HTTPInvalidParam as ex:
        raise BadRequest(str(ex.description)) from ex


def idempotency_key(req: falcon.Request) -> str | None:
    key = req.get_header("Idempotency-Key")
    if key is not None and not key_is_well_formed(key):
        raise BadRequest(f"Idempotency-Key must be {IDEMPOTENCY_KEY_RULE}")
    return key


def seconds(req: falcon.Request, name: str, *, maximum: float) -> float | None:
    """A finite number of seconds from 0 to `maximum`; None if absent."""
    with _bad_request():
        value = req.get_param_as_float(name, min_value=0, max_value=maximum)
    # Falcon lets "nan" through its bounds.
    if value is not None and not math.isfinite(value):
        raise BadRequest(f"{name} must be a number of seconds, 0 to {maximum:g}")
    return value


def rfc3339(req: falcon.Request, name: str) -> datetime | None:
    """An RFC 3339 time with its offset; None if absent."""
    text = req.get_param(name)
    if text is None:
        return None
    # An unencoded "+hh:mm" offset arrives as " hh:mm" (a "+" in a query string is a space).
    text = re.sub(r"(?<=[0-9]) ([0-9]{2}:[0-9]{2})$", r"+\1", text)
    if not re.fullmatch(RFC3339_PATTERN, text):
        raise BadRequest(
            f"{name} must be an RFC 3339 time with an offset, like 2030-01-31T09:00:00Z; "
            f"got {text!r}"
        )
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as ex:
        raise BadRequest(f"{name} is not a valid time: {ex}") from ex


def status(req: falcon.Request) -> str | None:
    value = req.get_param("status")
    if value is not None and value not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}; got {value!r}")
    return value


def limit(req: falcon.Request) -> int:
    with _bad_request():
        return req.get_param_as_int(
            "limit", min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT
        )


def cursor(req: falcon.Request) -> str | None:
    value = req.get_param("cursor")
    if value is not None and not re.fullmatch(CURSOR_PATTERN, value):
        raise BadRequest("cursor is not one this API returned")
    return value
