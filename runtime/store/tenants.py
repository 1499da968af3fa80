"""Tenants and their API keys."""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError

from runtime.errors import (
    AlreadyExists,
    NotFound,
    RequestRejected,
    TenantNotFound,
    TenantSuspended,
)
from runtime.store import models
from runtime.store.audit import AuditEntry, append_in
from runtime.store.db import Database
from runtime.store.retention import COLUMNS, MAX_RETENTION_S, TenantRetention
from runtime.store.views import ApiKeyView, TenantView

log = structlog.get_logger("ferry.keys")

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SCOPES = frozenset({"invoke", "read", "manage", "admin"})
#: The scopes a tenant's key may have; `admin` is an operator key's alone.
TENANT_SCOPES = SCOPES - {"admin"}
_KEY = re.compile(r"fy_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
_KEYS = models.ApiKey.__table__
_TENANTS = models.Tenant.__table__
#: Built once: every authenticated request runs it. The tenant's status comes with the key,
#: so a suspended tenant's keys are refused in the same round trip.
_KEY_BY_ID = (
    sa.select(_KEYS, _TENANTS.c.status.label("tenant_status"))
    .select_from(_KEYS.outerjoin(_TENANTS, _TENANTS.c.id == _KEYS.c.tenant_id))
    .where(_KEYS.c.id == sa.bindparam("key_id"))
)


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: a key's tenant (None: an operator key) and scopes.

    Only an operator key is `admin`, and `admin` implies every other scope.
    """

    key_id: str
    #: The tenant the key belongs to; None for an operator key, which belongs to none.
    tenant_id: str | None
    scopes: frozenset[str]
    #: When the key stops working by itself; None: it does not expire.
    expires_at: datetime | None = None

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None

    @property
    def is_admin(self) -> bool:
        return self.is_operator and "admin" in self.scopes

    def has(self, scope: str) -> bool:
        if scope == "admin":
            return self.is_admin
        return scope in self.scopes or self.is_admin


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_state(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> str:
    """`revoked`, `expired` or `active`: whether a key still authenticates at `now`."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


def check_key_scopes(tenant_id: str | None, scopes: frozenset[str]) -> None:
    """Refuse scopes a key of this kind cannot have (`RequestRejected`, saying why).

    A tenant's key has some of `invoke`, `read`, `manage`; an operator key (no tenant)
    has `admin`, and may list the others too.
    """
    unknown = scopes - SCOPES
    if not scopes or unknown:
        raise RequestRejected(f"unknown scopes: {', '.join(sorted(unknown)) or 'none given'}")
    if tenant_id is not None and "admin" in scopes:
        raise RequestRejected(
            "a tenant's key cannot have the admin scope: admin belongs to operator keys, "
            "which belong to no tenant (ferry keys create --operator --scopes admin)"
        )
    if tenant_id is None and "admin" not in scopes:
        raise RequestRejected(
            "an operator key needs the admin scope; a key of one tenant is made with --tenant ID"
        )


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - SCOPES
    if not scopes or unknown:
        raise RequestRejected(f"scopes must be some of {', '.join(sorted(SCOPES))}; got {text!r}")
    return scopes


class Tenants:
    """Tenants and keys over one `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Each change takes the `AuditEntry` of its record, appended in its transaction.

    def create(
        self, tenant_id: str, name: str | None = None, *, audit: AuditEntry | None = None
    ) -> TenantView:
        if not TENANT_ID.fullmatch(tenant_id):
            raise RequestRejected(f"tenant id {tenant_id!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
        try:
            with self.db.session() as s:
                row = models.Tenant(
                    id=tenant_id,
                    name=name or tenant_id,
                    status=models.TenantStatus.ACTIVE,
                    created_at=self.db.clock(),
                )
                s.add(row)
                s.flush()
                self._append(s, audit)
                return TenantView.from_row(row)
        except IntegrityError as ex:
            raise AlreadyExists(f"tenant {tenant_id!r} exists already") from ex

    def get(self, tenant_id: str) -> TenantView:
        with self.db.autocommit() as s:
            row = s.get(models.Tenant, tenant_id)
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            return TenantView.from_row(row)

    def list(self, *, status: str | None = None) -> builtins.list[TenantView]:
        with self.db.session() as s:
            query = sa.select(models.Tenant).order_by(models.Tenant.id)
            if status is not None:
                query = query.where(models.Tenant.status == status)
            return [TenantView.from_row(r) for r in s.scalars(query)]

    def set_status(
        self, tenant_id: str, status: models.TenantStatus, *, audit: AuditEntry | None = None
    ) -> TenantView:
        with self.db.session() as s:
            row = s.get(models.Tenant, tenant_id)
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            row.status = status
            self._append(s, audit)
            return TenantView.from_row(row)

    def retention(self, tenant_id: str) -> TenantRetention:
        """The tenant's own retention per final status (None: the deployment's default)."""
        with self.db.autocommit() as s:
            row = s.get(models.Tenant, tenant_id)
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            return TenantRetention.from_row(row)

    def set_retention(
        self,
        tenant_id: str,
        seconds: Mapping[str, int | None],
        *,
        audit: AuditEntry | None = None,
    ) -> TenantRetention:
        """Set the tenant's retention of the final statuses named (None: back to the default)."""
        unknown = set(seconds) - set(COLUMNS)
        if unknown:
            raise RequestRejected(f"no retention for {', '.join(sorted(unknown))}")
        if any(v is not None and not 0 <= v <= MAX_RETENTION_S for v in seconds.values()):
            raise RequestRejected(f"retention is a number of seconds from 0 to {MAX_RETENTION_S}")
        with self.db.session() as s:
            row = s.get(models.Tenant, tenant_id)
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            for status, value in seconds.items():
                setattr(row, COLUMNS[models.Status(status)], value)
            self._append(s, audit)
            return TenantRetention.from_row(row)

    # --- keys -------------------------------------------------------------------------------

    def create_key(
        self,
        tenant_id: str | None,
        scopes: frozenset[str],
        *,
        name: str = "",
        expires_at: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> tuple[ApiKeyView, str]:
        """Create a key of a tenant, or an operator key (`tenant_id` None).

        The plaintext is returned here and never again; `audit` gets the new key's id as
        its target.
        """
        check_key_scopes(tenant_id, scopes)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.db.session() as s:
            if tenant_id is not None and s.get(models.Tenant, tenant_id) is None:
                raise TenantNotFound(f"no tenant {tenant_id!r}")
            row = models.ApiKey(
                id=key_id,
                tenant_id=tenant_id,
                name=name,
                secret_hash=_hash(secret),
                scopes=",".join(sorted(scopes)),
                created_at=self.db.clock(),
                expires_at=expires_at,
                revoked_at=None,
            )
            s.add(row)
            s.flush()
            self._append(s, None if audit is None else audit.evolve(target=key_id))
            return ApiKeyView.from_row(row), f"fy_{key_id}_{secret}"

    def list_keys(self, tenant_id: str | None = None) -> builtins.list[ApiKeyView]:
        with self.db.session() as s:
            query = sa.select(models.ApiKey).order_by(models.ApiKey.created_at)
            if tenant_id is not None:
                query = query.where(models.ApiKey.tenant_id == tenant_id)
            return [ApiKeyView.from_row(r) for r in s.scalars(query)]

    def revoke_key(self, key_id: str, *, audit: AuditEntry | None = None) -> ApiKeyView:
        """Revoke a key; `audit` gets the key's tenant as its tenant."""
        with self.db.session() as s:
            row = s.get(models.ApiKey, key_id)
            if row is None:
                raise NotFound(f"no key {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = self.db.clock()
            self._append(s, None if audit is None else audit.evolve(tenant_id=row.tenant_id))
            return ApiKeyView.from_row(row)

    def _append(self, s: Any, audit: AuditEntry | None) -> None:
        if audit is not None:
            append_in(s, audit, self.db.clock())

    def authenticate(self, token: str) -> Principal | None:
        """Resolve a presented key to its principal; None for unknown, revoked or expired keys.

        A key of a suspended tenant raises `TenantSuspended`: it is refused whatever it
        asks. A tenant's key listing `admin` (made before operator keys existed) is refused
        like an unknown one.
        """
        match = _KEY.fullmatch(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self.db.statements() as connection:
            row = connection.execute(_KEY_BY_ID, {"key_id": key_id}).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        return self._principal(row)

    def principal(self, key_id: str) -> Principal | None:
        """The principal of a key known by id (a signed session's); None unless it is active."""
        with self.db.statements() as connection:
            row = connection.execute(_KEY_BY_ID, {"key_id": key_id}).first()
        return None if row is None else self._principal(row)

    def _principal(self, row: Any) -> Principal | None:
        if key_state(row.revoked_at, row.expires_at, self.db.clock()) != "active":
            return None
        scopes = frozenset(row.scopes.split(","))
        if row.tenant_id is not None:
            if "admin" in scopes:
                log.warning("tenant_admin_key_refused", key_id=row.id, tenant_id=row.tenant_id)
                return None
            if row.tenant_status != models.TenantStatus.ACTIVE:
                raise TenantSuspended(
                    f"tenant {row.tenant_id!r} is suspended: its keys are refused"
                )
        return Principal(
            key_id=row.id,
            tenant_id=row.tenant_id,
            scopes=scopes,
            expires_at=row.expires_at,
        )
