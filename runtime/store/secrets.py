"""Tenants' secrets as stored: sealed values by tenant, kind and name (`tenant_secrets`).

This module sees only sealed text (`runtime.secrets.crypto`); sealing and opening are the
service's (`runtime.services.secrets`). Every read and write names its tenant.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runtime.errors import InvalidState, TenantNotFound
from runtime.store import access_models, models
from runtime.store.audit import AuditEntry, append_in
from runtime.store.db import Database

_SECRETS: sa.Table = access_models.TenantSecret.__table__  # type: ignore[assignment]
_TENANTS = models.Tenant.__table__


@dataclasses.dataclass(frozen=True)
class StoredSecret:
    """One row: a sealed value and when it was set."""

    tenant_id: str
    kind: str
    name: str
    ciphertext: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None

    @classmethod
    def from_row(cls, row: sa.Row[tuple[object, ...]]) -> StoredSecret:
        m = row._mapping
        return cls(
            tenant_id=m["tenant_id"],
            kind=m["kind"],
            name=m["name"],
            ciphertext=m["ciphertext"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            expires_at=m["expires_at"],
        )


def _insert(s: Session) -> sa.Insert:
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_SECRETS)


class Secrets:
    """Sealed secrets over one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _require_tenant(self, s: Session, tenant_id: str) -> None:
        found = s.execute(sa.select(_TENANTS.c.id).where(_TENANTS.c.id == tenant_id)).first()
        if found is None:
            raise TenantNotFound(f"no tenant {tenant_id!r}")

    def put(
        self,
        tenant_id: str,
        kind: str,
        name: str,
        ciphertext: str,
        *,
        audit: AuditEntry | None = None,
    ) -> StoredSecret:
        """Set a secret (insert, or replace its value); `TenantNotFound` without the tenant.

        `audit`: the record of this change, committed with it.
        """
        now = self.db.clock()
        with self.db.session() as s:
            self._require_tenant(s, tenant_id)
            insert = _insert(s).values(
                tenant_id=tenant_id,
                kind=kind,
                name=name,
                ciphertext=ciphertext,
                created_at=now,
                updated_at=now,
                expires_at=None,
            )
            s.execute(
                insert.on_conflict_do_update(  # type: ignore[attr-defined]
                    index_elements=["tenant_id", "kind", "name"],
                    set_={"ciphertext": ciphertext, "updated_at": now, "expires_at": None},
                )
            )
            if audit is not None:
                append_in(s, audit, now)
            return self._one(s, tenant_id, kind, name)

    def add_if_absent(self, tenant_id: str, kind: str, name: str, ciphertext: str) -> StoredSecret:
        """Insert a secret unless one of that name exists; return whichever is stored.

        Two processes making a tenant's first webhook secret at once end with one.
        """
        now = self.db.clock()
        with self.db.session() as s:
            self._require_tenant(s, tenant_id)
            values = {"created_at": now, "updated_at": now, "expires_at": None}
            insert = _insert(s).values(
                tenant_id=tenant_id, kind=kind, name=name, ciphertext=ciphertext, **values
            )
            s.execute(insert.on_conflict_do_nothing())  # type: ignore[attr-defined]
            return self._one(s, tenant_id, kind, name)

    def _one(self, s: Session, tenant_id: str, kind: str, name: str) -> StoredSecret:
        row = s.execute(
            sa.select(_SECRETS).where(
                _SECRETS.c.tenant_id == tenant_id, _SECRETS.c.kind == kind, _SECRETS.c.name == name
            )
        ).one()
        return StoredSecret.from_row(row)

    def get(self, tenant_id: str, kind: str, names: Collection[str]) -> dict[str, StoredSecret]:
        """The tenant's secrets of these names that exist, by name."""
        if not names:
            return {}
        with self.db.statements() as c:
            rows = c.execute(
                sa.select(_SECRETS).where(
                    _SECRETS.c.tenant_id == tenant_id,
                    _SECRETS.c.kind == kind,
                    _SECRETS.c.name.in_(list(names)),
                )
            )
            return {row.name: StoredSecret.from_row(row) for row in rows}

    def present(self, tenant_id: str, kind: str, names: Collection[str]) -> set[str]:
        """Which of `names` the tenant has set (no value is read)."""
        if not names:
            return set()
        with self.db.statements() as c:
            rows = c.execute(
                sa.select(_SECRETS.c.name).where(
                    _SECRETS.c.tenant_id == tenant_id,
                    _SECRETS.c.kind == kind,
                    _SECRETS.c.name.in_(list(names)),
                )
            )
            return {row.name for row in rows}

    def list(self, tenant_id: str, kind: str) -> builtins.list[StoredSecret]:
        """The tenant's secrets of one kind, by name."""
        with self.db.statements() as c:
            rows = c.execute(
                sa.select(_SECRETS)
                .where(_SECRETS.c.tenant_id == tenant_id, _SECRETS.c.kind == kind)
                .order_by(_SECRETS.c.name)
            )
            return [StoredSecret.from_row(row) for row in rows]

    def delete(
        self, tenant_id: str, kind: str, name: str, *, audit: AuditEntry | None = None
    ) -> bool:
        """Remove a secret; whether there was one (`audit` is recorded only if there was)."""
        with self.db.session() as s:
            result: Any = s.execute(
                sa.delete(_SECRETS).where(
                    _SECRETS.c.tenant_id == tenant_id,
                    _SECRETS.c.kind == kind,
                    _SECRETS.c.name == name,
                )
            )
            removed = bool(result.rowcount)
            if removed and audit is not None:
                append_in(s, audit, self.db.clock())
            return removed

    def every(
        self, *, after: tuple[str, str, str] | None = None, limit: int = 500
    ) -> builtins.list[StoredSecret]:
        """Every tenant's secrets in key order, a page at a time (`after`: the last key seen)."""
        query = sa.select(_SECRETS).order_by(_SECRETS.c.tenant_id, _SECRETS.c.kind, _SECRETS.c.name)
        if after is not None:
            key = sa.tuple_(_SECRETS.c.tenant_id, _SECRETS.c.kind, _SECRETS.c.name)
            query = query.where(key > sa.tuple_(*after))
        with self.db.statements() as c:
            return [StoredSecret.from_row(row) for row in c.execute(query.limit(limit))]

    def reseal(self, secret: StoredSecret, ciphertext: str) -> bool:
        """Replace a value's sealed text, unless it changed since it was read.

        Only the sealing changes (the value is the same): `updated_at` stays.
        """
        with self.db.statements() as c:
            result = c.execute(
                sa.update(_SECRETS)
                .where(
                    _SECRETS.c.tenant_id == secret.tenant_id,
                    _SECRETS.c.kind == secret.kind,
                    _SECRETS.c.name == secret.name,
                    _SECRETS.c.ciphertext == secret.ciphertext,
                )
                .values(ciphertext=ciphertext)
            )
            return bool(result.rowcount)

    def supersede(
        self,
        tenant_id: str,
        kind: str,
        *,
        current: str,
        previous: str,
        ciphertext: str,
        previous_expires_at: datetime,
        previous_ciphertext: str | None,
        audit: AuditEntry | None = None,
    ) -> StoredSecret:
        """Make `ciphertext` the `current` secret; the old current becomes `previous`.

        In one transaction: the old `previous` is dropped, and the old current is kept
        as `previous` (sealed anew by the caller as `previous_ciphertext`, since a sealed
        value is bound to its name) until `previous_expires_at`.
        """
        now = self.db.clock()
        where = (_SECRETS.c.tenant_id == tenant_id) & (_SECRETS.c.kind == kind)
        try:
            return self._supersede(
                tenant_id,
                kind,
                where,
                now,
                current,
                previous,
                ciphertext,
                previous_expires_at,
                previous_ciphertext,
                audit,
            )
        except IntegrityError as ex:
            # Another rotation of the same secret committed between our delete and insert.
            raise InvalidState(
                "the secret is being rotated by another request at the same time; try again"
            ) from ex

    def _supersede(
        self,
        tenant_id: str,
        kind: str,
        where: sa.ColumnElement[bool],
        now: datetime,
        current: str,
        previous: str,
        ciphertext: str,
        previous_expires_at: datetime,
        previous_ciphertext: str | None,
        audit: AuditEntry | None,
    ) -> StoredSecret:
        with self.db.session() as s:
            self._require_tenant(s, tenant_id)
            if audit is not None:
                append_in(s, audit, now)
            s.execute(sa.delete(_SECRETS).where(where, _SECRETS.c.name.in_([current, previous])))
            rows = [dict(name=current, ciphertext=ciphertext, expires_at=None)]
            if previous_ciphertext is not None:
                rows.append(
                    dict(
                        name=previous,
                        ciphertext=previous_ciphertext,
                        expires_at=previous_expires_at,  # type: ignore[dict-item]
                    )
                )
            for row in rows:
                s.execute(
                    sa.insert(_SECRETS).values(
                        tenant_id=tenant_id, kind=kind, created_at=now, updated_at=now, **row
                    )
                )
            return self._one(s, tenant_id, kind, current)
