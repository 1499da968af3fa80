"""Dashboard sessions: sign in, check, sign out, and sign out everywhere.

Signing in with an API key makes a session: a random, opaque id that the browser keeps
(the dashboard signs it into a cookie) and a server-side record that stores only the
id's SHA-256, the key, its tenant, and when the session began, was last used and
expires. Every dashboard request checks the record, not just the cookie, so:

- signing out ends the record at once: a copy of the cookie is refused from then on;
- "sign out everywhere" ends every session of the key, in every browser;
- a key that no longer authenticates (revoked, expired, its tenant suspended) ends all
  of its sessions on their next request; they stay ended if the tenant is resumed.

Ended and expired records are removed at sign-in (a bounded batch each time), so the
table holds about as many rows as there are live sessions plus one batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from datetime import timedelta

import structlog

from runtime.errors import TenantSuspended
from runtime.store import Store
from runtime.store.sessions import DashboardSessions, SessionRecord
from runtime.store.tenants import Principal

log = structlog.get_logger("ferry.dashboard")

#: A session id as `login` makes it (`secrets.token_urlsafe(32)`); anything else is unknown.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
#: `last_seen_at` is written at most this often (seconds), so a page view stays a read.
TOUCH_EVERY_S = 60
#: Ended or expired records removed per sign-in, at most.
REMOVE_PER_LOGIN = 500


@dataclasses.dataclass(frozen=True)
class SignedIn:
    """A live session and the key it belongs to."""

    #: The opaque id the browser holds; never stored.
    session_id: str
    principal: Principal
    record: SessionRecord


def _hash(session_id: str) -> str:
    # Ids are 256-bit random: a fast hash loses nothing, as with API keys.
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionService:
    """The dashboard's sign-in use cases over the session records and the API keys."""

    def __init__(self, store: Store, *, max_age_s: int) -> None:
        self.records = DashboardSessions(store.db)
        self.tenants = store.tenants
        self.clock = store.db.clock
        self.max_age_s = max_age_s

    def login(self, principal: Principal) -> SignedIn:
        """A new session of a key that just authenticated (the caller checked its scopes)."""
        now = self.clock()
        removed = self.records.remove_expired(now, limit=REMOVE_PER_LOGIN)
        if removed:
            log.debug("dashboard_sessions_removed", count=removed)
        session_id = secrets.token_urlsafe(32)
        record = SessionRecord(
            id_hash=_hash(session_id),
            key_id=principal.key_id,
            tenant_id=principal.tenant_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=self.max_age_s),
            ended_at=None,
        )
        self.records.create(record)
        return SignedIn(session_id, principal, record)

    def check(self, session_id: str) -> SignedIn | None:
        """The live session of this id and its key; None if there is none.

        None too when the key no longer authenticates or lacks `read`: then every
        session of the key ends here. A suspended tenant's key ends them and raises
        `TenantSuspended`, so the page can say why.
        """
        if not SESSION_ID.fullmatch(session_id):
            return None
        now = self.clock()
        record = self.records.live(_hash(session_id), now)
        if record is None:
            return None
        try:
            principal = self.tenants.principal(record.key_id)
        except TenantSuspended:
            self._end_refused(record.key_id, "tenant_suspended")
            raise
        if principal is None or not principal.has("read"):
            self._end_refused(record.key_id, "key_refused")
            return None
        if (now - record.last_seen_at).total_seconds() >= TOUCH_EVERY_S:
            self.records.touch(record.id_hash, now)
        return SignedIn(session_id, principal, record)

    def _end_refused(self, key_id: str, reason: str) -> None:
        ended = self.records.end_for_key(key_id, self.clock())
        log.info("dashboard_sessions_ended", key_id=key_id, reason=reason, count=ended)

    def logout(self, session_id: str) -> bool:
        """End this session now; whether it was live."""
        if not SESSION_ID.fullmatch(session_id):
            return False
        return self.records.end(_hash(session_id), self.clock()) > 0

    def sign_out_everywhere(self, key_id: str) -> int:
        """End every live session of this key, in every browser; how many ended."""
        return self.records.end_for_key(key_id, self.clock())
