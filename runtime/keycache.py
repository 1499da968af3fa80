"""A short memory of operator keys that authenticated, so they skip the key lookup.

Every request to the gateway presents an API key, and reading `api_keys` is a round trip
to the store (its cost is measured in docs/perf/README.md).

A tenant's key is read on every request, together with its tenant's status in the same
statement (`Tenants.authenticate`): suspending a tenant (`ferry tenants suspend`, in
another process) refuses its keys on their next request in every gateway process, and so
does revoking one of them. No cache could promise that without a read per request, and
checking the tenant's status alone would cost the same round trip as reading the key.
The one exception is a request whose write checks the key itself: an invoke's INSERT
stores the invocation only while the key is active and its tenant too
(`statements.insert_for_active_tenant` with `key_checked`), so for an invoke a tenant's key
that authenticated is remembered like an operator key, and a key revoked or a tenant
suspended a moment ago is still refused (401, 403) with nothing stored. Every other
request reads the key.

An operator key belongs to no tenant, so no suspension concerns it: one that
authenticated is remembered for `FERRY_AUTH_CACHE_S` seconds, never past its own expiry,
and revoking it takes effect within that many seconds in every gateway process. Unknown,
revoked and expired keys are never remembered, so a wrong key is always read and refused.

The cache is keyed by the SHA-256 of the whole presented key, so holding an entry needs
the key itself, and no secret is kept in memory in the clear.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import datetime

from cachetools import TLRUCache

from runtime.store.db import utcnow
from runtime.store.tenants import Principal, Tenants

#: Beyond this many remembered keys the least recently used one is forgotten.
DEFAULT_MAX_KEYS = 10_000


class KeyCache:
    """`Tenants.authenticate` with a memory of the operator keys that authenticated."""

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
        self.ttl_s = ttl_s
        self.clock = clock
        # A time-aware LRU: each entry gets its own expiry (see `_until`), in POSIX seconds
        # of `clock`, so a test's fake clock drives it.
        self._known: TLRUCache[bytes, Principal] = TLRUCache(
            maxsize=max_keys, ttu=self._until, timer=lambda: self.clock().timestamp()
        )
        # cachetools' caches are not thread-safe; the gateway's threads share this one.
        self._lock = threading.Lock()

    def _until(self, _digest: bytes, principal: Principal, now: float) -> float:
        """When an entry goes stale: after the TTL, or when the key expires if sooner."""
        until = now + self.ttl_s
        if principal.expires_at is not None:
            until = min(until, principal.expires_at.timestamp())
        return until

    def authenticate(self, token: str, *, checked_by_write: str | None = None) -> Principal | None:
        """As `Tenants.authenticate`; an operator key from memory while its entry is fresh.

        `checked_by_write`: the scope of a write that checks the key again in its own
        statement (an invoke, `InvocationService.accept` with `key_id`); a tenant's key
        with that scope may come from memory too. (One without it is read, so that a
        suspended tenant's key is still told `tenant-suspended` before `scope-missing`.)
        """
        if not self.ttl_s:
            return self.tenants.authenticate(token)
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            known = self._known.get(digest)
        if known is not None and (
            known.is_operator or (checked_by_write is not None and known.has(checked_by_write))
        ):
            return known
        principal = self.tenants.authenticate(token)
        if principal is not None:
            with self._lock:
                self._known[digest] = principal
        # A refused key is never stored; a stale entry is never served; a tenant's key is
        # served from memory only to a request whose write checks it.
        return principal

    def __len__(self) -> int:
        """How many keys are remembered (stale entries included until they are swept)."""
        with self._lock:
            return len(self._known)

    def forget(self) -> None:
        """Drop every remembered key (the next request of each reads it again)."""
        with self._lock:
            self._known.clear()
