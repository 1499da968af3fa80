"""A short memory of API keys that authenticated, so a busy gateway skips the key lookup.

Every request to the gateway presents an API key. Reading `api_keys` for each one is a
round trip to PostgreSQL and, in a cProfile of 2,000 accepts through the WSGI app, a
fifth of the gateway's CPU per accepted invocation. A key that authenticated is remembered for `FERRY_AUTH_CACHE_S`
seconds, never past its own expiry: revoking a key (`ferry keys revoke`, which runs in
another process) takes effect within that many seconds in every gateway process. Unknown,
revoked and expired keys are not remembered, so a wrong key is always read and refused.

The cache is keyed by the SHA-256 of the whole presented key, so holding an entry needs
the key itself, and no secret is kept in memory in the clear.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from runtime.store.db import utcnow
from runtime.store.tenants import Principal, Tenants

#: Beyond this many remembered keys the memory starts afresh (a bound, not an LRU: keys
#: in use come back at the cost of one lookup each).
DEFAULT_MAX_KEYS = 10_000


class KeyCache:
    def __init__(
        self,
        tenants: Tenants,
        ttl_s: float,
        *,
        clock: Callable[[], datetime] = utcnow,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must be 0 (no cache) or more")
        self.tenants = tenants
        self.ttl = timedelta(seconds=ttl_s)
        self.clock = clock
        self.max_keys = max_keys
        self._known: dict[bytes, tuple[Principal, datetime]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Principal | None:
        """As `Tenants.authenticate`, answered from memory while an entry is fresh."""
        if not self.ttl:
            return self.tenants.authenticate(token)
        digest = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        known = self._known.get(digest)
        if known is not None and now < known[1]:
            return known[0]
        principal = self.tenants.authenticate(token)
        with self._lock:
            if principal is None:
                self._known.pop(digest, None)
                return None
            until = now + self.ttl
            if principal.expires_at is not None:
                until = min(until, principal.expires_at)
            if len(self._known) >= self.max_keys:
                self._known.clear()
            self._known[digest] = (principal, until)
        return principal

    def forget(self) -> None:
        """Drop every remembered key (the next request of each reads it again)."""
        with self._lock:
            self._known.clear()
