"""Dashboard cookies and CSRF tokens, signed with itsdangerous.

The session cookie carries the session's opaque id (`runtime.services.sessions`), signed
with a timestamp: `<session id>.<timestamp>.<signature>`. It never names the key; the
server-side record says which key it is, and is checked on every request, so a valid
signature alone opens nothing once the session has ended.

Every signature is made by itsdangerous with HMAC-SHA256 under a key derived from
`FERRY_SECRET_KEY` and a salt of its own purpose (`SALTS`), so a value signed for one
purpose (a login cookie, a CSRF token) is worthless for another. The CSRF token is the
signature of the session id (a synchronizer token bound to the session, stored nowhere):
every POST must carry it. The login form, before any session exists, is protected the
same way by a short-lived signed nonce cookie and the signature of that nonce.

Anything presented is first matched against the alphabet itsdangerous writes, so a
crafted or non-ASCII value is refused like a forged one, never an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import falcon
from itsdangerous import BadData, Signer, TimestampSigner

from runtime.settings import Settings

SESSION_COOKIE = "ferry_session"
LOGIN_COOKIE = "ferry_login"
COOKIE_PATH = "/dashboard"
#: Seconds a login form stays valid.
LOGIN_FORM_MAX_AGE_S = 900
#: One salt per purpose: a signature made for one is refused for every other.
SALTS = {
    "session": "ferry.dashboard.session-cookie",
    "csrf": "ferry.dashboard.csrf-token",
    "login-cookie": "ferry.dashboard.login-cookie",
    "login-form": "ferry.dashboard.login-form",
}
#: What itsdangerous writes (URL-safe base64 and its `.` separator), bounded in length.
_SIGNED = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: The signing key is an HMAC of the secret and the salt; signatures are HMAC-SHA256.
_HMAC_SHA256: dict[str, Any] = {"key_derivation": "hmac", "digest_method": hashlib.sha256}


@dataclasses.dataclass(frozen=True)
class SessionOptions:
    #: Seconds a session lasts before a new login is needed.
    max_age_s: int = 8 * 3600
    #: Believe `X-Forwarded-Proto` (only behind a proxy that sets it).
    trust_forwarded_proto: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionOptions:
        """Read `FERRY_DASHBOARD_SESSION_MAX_AGE_S` and `FERRY_TRUST_FORWARDED_PROTO`."""
        return cls(
            max_age_s=settings.dashboard_session_max_age_s,
            trust_forwarded_proto=settings.trust_forwarded_proto,
        )


class _Clocked(TimestampSigner):
    """A timestamp signer reading the time from `clock` (a test's fake clock)."""

    def __init__(self, secret_key: str, salt: str, clock: Callable[[], float]) -> None:
        super().__init__(secret_key, salt=salt, **_HMAC_SHA256)
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock())


class SessionSigner:
    """Issue and check session cookies, login nonces and CSRF tokens."""

    def __init__(
        self,
        secret_key: str,
        options: SessionOptions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self._session = _Clocked(secret_key, SALTS["session"], clock)
        self._login_cookie = _Clocked(secret_key, SALTS["login-cookie"], clock)
        self._csrf = Signer(secret_key, salt=SALTS["csrf"], **_HMAC_SHA256)
        self._login_form = Signer(secret_key, salt=SALTS["login-form"], **_HMAC_SHA256)

    @staticmethod
    def _unsign(signer: TimestampSigner, value: str | None, max_age: int) -> str | None:
        if not value or not _SIGNED.fullmatch(value):
            return None
        try:
            return signer.unsign(value, max_age=max_age).decode("ascii")
        except BadData:  # a bad signature, a bad or future timestamp, or too old
            return None

    @staticmethod
    def _verify(signer: Signer, value: str, signature: str | None) -> bool:
        if not signature or not _SIGNATURE.fullmatch(signature):
            return False
        return signer.verify_signature(value, signature)

    # --- sessions -------------------------------------------------------------------------------

    def issue(self, session_id: str) -> str:
        """The cookie value carrying `session_id`."""
        return self._session.sign(session_id).decode("ascii")

    def read(self, cookie: str | None) -> str | None:
        """The session id a cookie carries, if it is ours, intact and not too old.

        Whether that session is still live is the session service's to say.
        """
        return self._unsign(self._session, cookie, self.options.max_age_s)

    def csrf_token(self, session_id: str) -> str:
        return self._csrf.get_signature(session_id).decode("ascii")

    def csrf_valid(self, session_id: str, token: str | None) -> bool:
        return self._verify(self._csrf, session_id, token)

    # --- the login form -------------------------------------------------------------------------

    def login_nonce(self) -> tuple[str, str]:
        """A cookie value for the login form and the token its form must send back."""
        nonce = secrets.token_urlsafe(24)
        cookie = self._login_cookie.sign(nonce).decode("ascii")
        return cookie, self._login_form.get_signature(nonce).decode("ascii")

    def login_valid(self, cookie: str | None, token: str | None) -> bool:
        nonce = self._unsign(self._login_cookie, cookie, LOGIN_FORM_MAX_AGE_S)
        return nonce is not None and self._verify(self._login_form, nonce, token)

    # --- cookies --------------------------------------------------------------------------------

    def secure(self, req: falcon.Request) -> bool:
        """Whether the browser reached us over TLS (directly, or via a trusted proxy)."""
        if req.scheme == "https":
            return True
        if self.options.trust_forwarded_proto:
            return req.forwarded_scheme == "https"
        return False

    def set_cookie(
        self, req: falcon.Request, resp: falcon.Response, name: str, value: str, max_age: int
    ) -> None:
        resp.set_cookie(
            name,
            value,
            max_age=max_age,
            path=COOKIE_PATH,
            secure=self.secure(req),
            http_only=True,
            same_site="Strict",
        )

    def clear_cookie(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.unset_cookie(name, path=COOKIE_PATH, same_site="Strict")
