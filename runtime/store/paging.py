"""Opaque page cursors for newest-first listings (the API's and the dashboard's)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from runtime.errors import BadRequest

#: The longest cursor this module makes is about 120 characters; anything much longer
#: is not one of ours (and is refused before it is decoded).
MAX_CURSOR_CHARS = 512
#: The longest row id a cursor may name.
MAX_ROW_ID_CHARS = 255


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque page cursor: the position after the row (newest-first listings)."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names: an aware time (UTC) and a row id; `BadRequest` if not ours.

    Anything a client can send is a 400 here, never an error of the store: too long,
    not base64 or JSON, not exactly `[time, id]`, a time without its offset.
    """
    refused = BadRequest("cursor is not one this API returned")
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS:
        raise refused
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded: Any = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, RecursionError) as ex:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and non-ASCII input.
        raise refused from ex
    if not (isinstance(decoded, list) and len(decoded) == 2):
        raise refused
    created_text, row_id = decoded
    if not (isinstance(created_text, str) and isinstance(row_id, str)):
        raise refused
    if not 0 < len(row_id) <= MAX_ROW_ID_CHARS:
        raise refused
    try:
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None:
            raise ValueError("a cursor's time carries its offset")
        return created_at.astimezone(UTC), row_id
    except (ValueError, OverflowError) as ex:
        raise refused from ex
