"""Query parameters and headers of the API, parsed strictly: a bad value answers 400."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import falcon

from runtime.errors import BadRequest
from runtime.store.models import Status

#: `Idempotency-Key`: 1 to 255 printable ASCII characters.
VALID_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
#: RFC 3339 date-time; the offset is required ("Z" or "+hh:mm").
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
STATUSES = tuple(status.value for status in Status)


def idempotency_key(req: falcon.Request) -> str | None:
    key = req.get_header("Idempotency-Key")
    if key is None:
        return None
    if not VALID_IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


def seconds(req: falcon.Request, name: str, *, maximum: float | None = None) -> float | None:
    """A non-negative number of seconds, at most `maximum`; None if absent."""
    text = req.get_param(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (maximum is not None and value > maximum):
        bound = f"0 to {maximum:g}" if maximum is not None else "0 or more"
        raise BadRequest(f"{name} must be a number of seconds, {bound}; got {text!r}")
    return value


def rfc3339(req: falcon.Request, name: str) -> datetime | None:
    """An RFC 3339 time with its offset; None if absent."""
    text = req.get_param(name)
    if text is None:
        return None
    # An unencoded "+hh:mm" offset arrives as " hh:mm" (a "+" in a query string is a space).
    text = re.sub(r"(?<=\d) (\d{2}:\d{2})$", r"+\1", text)
    if not RFC3339.fullmatch(text):
        raise BadRequest(
            f"{name} must be an RFC 3339 time with an offset, like 2030-01-31T09:00:00Z; "
            f"got {text!r}"
        )
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as ex:
        raise BadRequest(f"{name} is not a valid time: {ex}") from ex


def scheduled_for(req: falcon.Request, now: datetime) -> datetime | None:
    """When to run: `?delay=S` from now, or `?at=RFC3339`; None for now."""
    delay = seconds(req, "delay")
    at = rfc3339(req, "at")
    if delay is not None and at is not None:
        raise BadRequest("give delay or at, not both")
    if at is not None:
        return at
    if delay is None:
        return None
    try:
        return now + timedelta(seconds=delay)
    except OverflowError as ex:
        raise BadRequest(f"delay is too far in the future: {delay:g} seconds") from ex


def status(req: falcon.Request) -> str | None:
    value = req.get_param("status")
    if value is not None and value not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}; got {value!r}")
    return value


def limit(req: falcon.Request, *, default: int = 50, maximum: int = 200) -> int:
    text = req.get_param("limit")
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text) or not 1 <= int(text) <= maximum:
        raise BadRequest(f"limit must be a whole number from 1 to {maximum}; got {text!r}")
    return int(text)
