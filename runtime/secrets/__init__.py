"""Tenants' secrets: encryption at rest, and what a running function sees of them.

`crypto.SecretBox` seals and opens stored values with keys derived from `FERRY_SECRET_KEY`
(and, while it is being rotated, `FERRY_SECRET_KEY_PREVIOUS`). `values.SecretValues` is the
read-only mapping a handler gets as `ctx.secrets`; `values.scrub` replaces the values it
holds in any text (an error message, a traceback, a log line) before that text is kept.
The use cases (set, list, delete, rotate, webhook signing secrets) are
`runtime.services.secrets.SecretService`; the SQL is `runtime.store.secrets`.
"""

from __future__ import annotations

from runtime.secrets.crypto import SecretBox
from runtime.secrets.values import SecretValues, scrub, scrub_json

__all__ = ["SecretBox", "SecretValues", "scrub", "scrub_json"]
