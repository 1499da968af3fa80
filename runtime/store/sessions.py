"""Dashboard session records: created at sign-in, checked on every dashboard request.

Rows are found by the SHA-256 of the session id (the caller hashes it; see
`runtime.services.sessions`). A session is valid while `expires_at` is in the future:
ending one sets `ended_at` and brings `expires_at` to that instant, so one indexed
comparison tells both what is still valid and what may be removed.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from runtime.store import access_models
from runtime.store.db import Database

_T: sa.Table = access_models.DashboardSession.__table__  # type: ignore[assignment]
#: Built once: every dashboard request runs it.
_LIVE_BY_HASH = sa.select(_T).where(
    _T.c.id_hash == sa.bindparam("id_hash"), _T.c.expires_at > sa.bindparam("now")
)


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One dashboard session as stored (never the session id itself)."""

    id_hash: str
    key_id: str
    tenant_id: str | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ended_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> SessionRecord:
        return cls(**{field.name: getattr(row, field.name) for field in dataclasses.fields(cls)})


class DashboardSessions:
    """Create, find, touch, end and remove dashboard session records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, record: SessionRecord) -> None:
        with self.db.statements() as connection:
            connection.execute(sa.insert(_T).values(**dataclasses.asdict(record)))

    def live(self, id_hash: str, now: datetime) -> SessionRecord | None:
        """The record of this hash if it has not ended or expired by `now`."""
        with self.db.statements() as connection:
            row = connection.execute(_LIVE_BY_HASH, {"id_hash": id_hash, "now": now}).first()
        return None if row is None else SessionRecord.from_row(row)

    def touch(self, id_hash: str, now: datetime) -> None:
        """Note that the session was used at `now` (a live session only)."""
        with self.db.statements() as connection:
            connection.execute(
                sa.update(_T)
                .where(_T.c.id_hash == id_hash, _T.c.expires_at > now)
                .values(last_seen_at=now)
            )

    def end(self, id_hash: str, now: datetime) -> int:
        """End one session at `now`; how many ended (0: it had ended or expired already)."""
        return self._end(_T.c.id_hash == id_hash, now)

    def end_for_key(self, key_id: str, now: datetime) -> int:
        """End every live session of one API key at `now`; how many."""
        return self._end(_T.c.key_id == key_id, now)

    def _end(self, which: sa.ColumnElement[bool], now: datetime) -> int:
        with self.db.statements() as connection:
            done: Any = connection.execute(
                sa.update(_T)
                .where(which, _T.c.expires_at > now)
                .values(ended_at=now, expires_at=now)
            )
        return int(done.rowcount)

    def remove_expired(self, now: datetime, *, limit: int) -> int:
        """Delete up to `limit` records that ended or expired before `now`; how many."""
        with self.db.statements() as connection:
            oldest = (
                sa.select(_T.c.id_hash)
                .where(_T.c.expires_at <= now)
                .order_by(_T.c.expires_at)
                .limit(limit)
            )
            done: Any = connection.execute(sa.delete(_T).where(_T.c.id_hash.in_(oldest)))
        return int(done.rowcount)
