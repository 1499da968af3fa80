"""Ferry's webhook signature: `Ferry-Signature: t=<unix time>,v1=<hex HMAC-SHA256>`.

The HMAC is over `"<t>.<raw body>"`, keyed with the tenant's webhook signing secret (the
`whsec_...` text as UTF-8). Just after a rotation a second `v1=` signs with the previous
secret. Used by `functions/send_webhook.py` and completion callbacks
(`runtime.callbacks`); a receiver checks a delivery with `verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

#: How far a signature's timestamp may be from the receiver's clock, by default.
SIGNATURE_TOLERANCE_S = 300.0


class SignatureInvalid(ValueError):
    """The webhook signature is malformed, does not match the body, or is too old."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `v1` signature: hex HMAC-SHA256 of `"<timestamp>.<body>"`."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets: bytes | Sequence[bytes], timestamp: int, body: bytes) -> str:
    """The `Ferry-Signature` header value for a body sent at `timestamp`.

    One `v1=` per secret, in order (the current secret first, then one being rotated out).
    """
    keys = [secrets] if isinstance(secrets, bytes) else list(secrets)
    return ",".join([f"t={timestamp}", *(f"v1={sign(key, timestamp, body)}" for key in keys)])


def verify_signature(
    body: bytes,
    header: str,
    secret: bytes | str,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a received `Ferry-Signature` header; return its timestamp.

    `secret` is the tenant's webhook signing secret (the `whsec_...` text, or its UTF-8
    bytes). Several `v1=` entries are accepted (any one may match): Ferry signs with the
    old and the new secret while one is rotated.

    Raises:
        SignatureInvalid: the header is malformed, no signature matches the body, or the
            timestamp is more than `tolerance_s` seconds from `now` (default: this clock).
    """
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureInvalid("the signature's timestamp is not a number") from None
        elif key == "v1":
            candidates.append(value.encode("utf-8", "replace"))
    if timestamp is None or not candidates:
        raise SignatureInvalid("the signature header needs t=<timestamp> and v1=<signature>")
    secret_bytes = secret.encode() if isinstance(secret, str) else secret
    expected = sign(secret_bytes, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureInvalid("no signature matches the body")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureInvalid(f"the signature's timestamp is more than {tolerance_s:g} s away")
    return timestamp
