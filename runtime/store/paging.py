"""Opaque page cursors for newest-first listings (the API's and the dashboard's)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from runtime.errors import BadRequest


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque page cursor: the position after the row (newest-first listings)."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, last_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created_at), str(last_id)
    except (ValueError, TypeError) as ex:
        raise BadRequest("cursor is not one this API returned") from ex
