"""What a completion callback URL may be: checked when a function declares one and at accept."""

from __future__ import annotations

from urllib.parse import urlsplit

#: Longer URLs are refused: a callback URL is stored and shown with every invocation.
MAX_CALLBACK_URL_LENGTH = 2000


def callback_url_problem(url: object) -> str | None:
    """Why `url` cannot be a callback URL, or None when it can.

    An absolute http(s) URL with a host, an optional valid port, no `user:password@` and
    no spaces or control characters. Where it points is checked at delivery, by the
    outbound rules (`FERRY_OUTBOUND_ALLOW`): the address a name resolves to may change.
    """
    if not isinstance(url, str) or not url:
        return "the callback URL must be a non-empty string"
    if len(url) > MAX_CALLBACK_URL_LENGTH:
        return f"the callback URL is over {MAX_CALLBACK_URL_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "the callback URL may not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return "the callback URL is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "the callback URL must be an http or https URL"
    if "@" in parts.netloc:
        return "the callback URL may not carry credentials (user:password@)"
    if not parts.hostname:
        return "the callback URL has no host"
    return None
