"""Dashboard sessions: a signed cookie naming the API key, and CSRF tokens bound to it.

The cookie holds `v1.<key id>.<nonce>.<issued at>.<signature>`: the key's public id,
never the key itself, signed with HMAC-SHA256 under a key derived from
`FERRY_SECRET_KEY` (the standard library's `hmac`; no extra dependency). Each request
checks the signature and age, then that the key still authenticates, so revoking a
key logs its sessions out. The CSRF token is an HMAC of the session's random nonce
(a synchronizer token bound to the session, not stored server-side): every POST must
carry it. The login form, before any session exists, is protected the same way by a
short-lived signed nonce cookie.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

import falcon

from runtime.settings import Settings

SESSION_COOKIE = "ferry_session"
LOGIN_COOKIE = "ferry_login"
COOKIE_PATH = "/dashboard"
#: Seconds a login form stays valid.
LOGIN_FORM_MAX_AGE_S = 900
_KEY_ID = re.compile(r"[a-z0-9]{1,32}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: Seconds since the epoch, in ASCII digits (`str.isdigit` also takes "²", which `int` refuses).
_ISSUED = re.compile(r"[0-9]{1,12}")


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


@dataclasses.dataclass(frozen=True)
class Session:
    key_id: str
    nonce: str
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class SessionSigner:
    """Issue and check session cookies, login nonces and CSRF tokens."""

    def __init__(
        self,
        secret_key: str,
        options: SessionOptions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A key of its own, so a signature made here means nothing anywhere else.
        self._key = hmac.new(secret_key.encode(), b"ferry-dashboard-v1", hashlib.sha256).digest()
        self.options = options
        self.clock = clock

    def _sign(self, purpose: str, payload: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\n{payload}".encode(), hashlib.sha256)
        return _b64(mac.digest())

    def _valid(self, purpose: str, payload: str, signature: str) -> bool:
        # Compared as bytes: `compare_digest` raises TypeError on a str with non-ASCII.
        expected = self._sign(purpose, payload).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))

    # --- sessions -------------------------------------------------------------------------------

    def issue(self, key_id: str) -> tuple[str, Session]:
        session = Session(key_id, secrets.token_urlsafe(24), int(self.clock()))
        payload = f"v1.{session.key_id}.{session.nonce}.{session.issued_at}"
        return f"{payload}.{self._sign('session', payload)}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if it is ours, intact and not expired."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 5 or parts[0] != "v1":
            return None
        _version, key_id, nonce, issued, signature = parts
        if not (
            _KEY_ID.fullmatch(key_id) and _NONCE.fullmatch(nonce) and _ISSUED.fullmatch(issued)
        ):
            return None
        if not self._valid("session", ".".join(parts[:4]), signature):
            return None
        age = self.clock() - int(issued)
        if age < -60 or age > self.options.max_age_s:
            return None
        return Session(key_id, nonce, int(issued))

    def csrf_token(self, session: Session) -> str:
        return self._sign("csrf", session.nonce)

    def csrf_valid(self, session: Session, token: str | None) -> bool:
        return bool(token) and self._valid("csrf", session.nonce, str(token))

    # --- the login form -------------------------------------------------------------------------

    def login_nonce(self) -> tuple[str, str]:
        """A cookie value for the login form and the token its form must send back."""
        nonce = secrets.token_urlsafe(24)
        issued = str(int(self.clock()))
        payload = f"{nonce}.{issued}"
        return f"{payload}.{self._sign('login-cookie', payload)}", self._sign("login", nonce)

    def login_valid(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        parts = cookie.split(".")
        if len(parts) != 3 or not _NONCE.fullmatch(parts[0]) or not _ISSUED.fullmatch(parts[1]):
            return False
        if not self._valid("login-cookie", f"{parts[0]}.{parts[1]}", parts[2]):
            return False
        if not 0 <= self.clock() - int(parts[1]) <= LOGIN_FORM_MAX_AGE_S:
            return False
        return self._valid("login", parts[0], str(token))

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
