"""Tenants and their API keys: the rules the CLI, the API and the dashboard share.

A tenant id matches `TENANT_ID`; a key is shown once, when it is created. A tenant's key
has some of `invoke`, `read`, `manage` and acts for its tenant alone; an operator key has
`admin`, belongs to no tenant and acts for one named per request. A key authenticates
until it is revoked or expires, and a suspended tenant's keys are refused on their next
request in every process (see `runtime.keycache` for what is remembered, and for how long).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from runtime.keycache import KeyCache
from runtime.services.audit import SYSTEM, Actor
from runtime.store import Store
from runtime.store.models import TenantStatus
from runtime.store.retention import RetentionPolicy, TenantRetention
from runtime.store.tenants import TENANT_ID, Principal, parse_scopes
from runtime.store.views import ApiKeyView, TenantView

__all__ = [
    "TENANT_ID",
    "NewKey",
    "Principal",
    "RetentionPolicy",
    "TenantRetention",
    "TenantService",
]


class NewKey(NamedTuple):
    """A key just created, and its secret: shown now and never again."""

    key: ApiKeyView
    secret: str


class TenantService:
    """Create, list, suspend and resume tenants; create, list, revoke and check keys."""

    def __init__(self, store: Store, *, auth_cache_s: float = 0.0) -> None:
        self.tenants = store.tenants
        self.clock = store.db.clock
        self.keys = KeyCache(store.tenants, ttl_s=auth_cache_s)

    # --- tenants ------------------------------------------------------------------------------

    # Every change is recorded in the audit trail with its `actor`, in its transaction.

    def create(
        self, tenant_id: str, name: str | None = None, *, actor: Actor = SYSTEM
    ) -> TenantView:
        """A new active tenant; `AlreadyExists` if the id is taken."""
        audit = actor.entry("tenant.create", tenant_id=tenant_id, target=tenant_id)
        return self.tenants.create(tenant_id, name, audit=audit)

    def get(self, tenant_id: str) -> TenantView:
        """One tenant; `TenantNotFound` if there is none."""
        return self.tenants.get(tenant_id)

    def list(self, *, status: str | None = None) -> builtins.list[TenantView]:
        """Every tenant (or those in `status`), by id."""
        return self.tenants.list(status=status)

    def suspend(self, tenant_id: str, *, actor: Actor = SYSTEM) -> TenantView:
        """Stop a tenant: nothing new of it runs until it is resumed."""
        audit = actor.entry("tenant.suspend", tenant_id=tenant_id, target=tenant_id)
        return self.tenants.set_status(tenant_id, TenantStatus.SUSPENDED, audit=audit)

    def resume(self, tenant_id: str, *, actor: Actor = SYSTEM) -> TenantView:
        """Let a suspended tenant run again."""
        audit = actor.entry("tenant.resume", tenant_id=tenant_id, target=tenant_id)
        return self.tenants.set_status(tenant_id, TenantStatus.ACTIVE, audit=audit)

    def retention(self, tenant_id: str) -> TenantRetention:
        """The tenant's own retention per final status; None where it follows the default."""
        return self.tenants.retention(tenant_id)

    def set_retention(
        self, tenant_id: str, seconds: Mapping[str, int | None], *, actor: Actor = SYSTEM
    ) -> TenantRetention:
        """Keep the tenant's invocations that end in each status named for that many seconds.

        Keys are final statuses (`succeeded`, `failed`, `cancelled`); 0 keeps them forever,
        None returns to the deployment's `FERRY_RETENTION_*_S`; statuses not named keep
        their current value. The sweep applies it from its next retention run.
        """
        audit = actor.entry(
            "tenant.set_retention",
            tenant_id=tenant_id,
            target=tenant_id,
            detail={"seconds": dict(seconds)},
        )
        return self.tenants.set_retention(tenant_id, seconds, audit=audit)

    # --- keys ---------------------------------------------------------------------------------

    def create_key(
        self,
        tenant_id: str,
        scopes: str | Iterable[str],
        *,
        name: str = "",
        expires_at: datetime | None = None,
        actor: Actor = SYSTEM,
    ) -> NewKey:
        """A new key of `tenant_id`; `scopes` comma-separated or as names, never `admin`."""
        return self._create_key(tenant_id, scopes, name=name, expires_at=expires_at, actor=actor)

    def create_operator_key(
        self,
        scopes: str | Iterable[str] = "admin",
        *,
        name: str = "",
        expires_at: datetime | None = None,
        actor: Actor = SYSTEM,
    ) -> NewKey:
        """A new operator key: of no tenant, with `admin` among its scopes."""
        return self._create_key(None, scopes, name=name, expires_at=expires_at, actor=actor)

    def _create_key(
        self,
        tenant_id: str | None,
        scopes: str | Iterable[str],
        *,
        name: str,
        expires_at: datetime | None,
        actor: Actor,
    ) -> NewKey:
        wanted = parse_scopes(scopes if isinstance(scopes, str) else ",".join(scopes))
        # The target is the new key's id, which the store fills in.
        audit = actor.entry(
            "key.create",
            tenant_id=tenant_id,
            target="",
            detail={"scopes": sorted(wanted), "name": name},
        )
        view, secret = self.tenants.create_key(
            tenant_id, wanted, name=name, expires_at=expires_at, audit=audit
        )
        return NewKey(view, secret)

    def list_keys(self, tenant_id: str | None = None) -> builtins.list[ApiKeyView]:
        """Every key (or one tenant's), oldest first; an unknown tenant is `TenantNotFound`."""
        if tenant_id is not None:
            self.tenants.get(tenant_id)
        return self.tenants.list_keys(tenant_id)

    def revoke_key(self, key_id: str, *, actor: Actor = SYSTEM) -> ApiKeyView:
        """Revoke a key; here at once, in other processes within their `auth_cache_s`."""
        # The record's tenant is the key's, which the store fills in.
        audit = actor.entry("key.revoke", tenant_id=None, target=key_id)
        key = self.tenants.revoke_key(key_id, audit=audit)
        self.keys.forget()
        return key

    def key_state(self, key: ApiKeyView) -> str:
        """`active`, `revoked`, `expired`, or `refused` (a tenant's key listing `admin`)."""
        if key.revoked_at is not None:
            return "revoked"
        if key.expires_at is not None and key.expires_at <= self.clock():
            return "expired"
        if key.tenant_id is not None and "admin" in key.scopes:
            return "refused"
        return "active"

    def authenticate(self, token: str, *, checked_by_write: str | None = None) -> Principal | None:
        """The principal of a presented key; None for an unknown, revoked or expired one.

        A suspended tenant's key raises `TenantSuspended`. `checked_by_write`: the scope of
        a write that checks the key again itself (`runtime.keycache`).
        """
        return self.keys.authenticate(token, checked_by_write=checked_by_write)
