"""The tables of tenants' protection: the audit trail, dashboard sessions, tenant secrets.

Beside `runtime.store.models` (the runtime's own tables), on the same `Base`: importing
this module registers them in its metadata (`runtime.store` and the migrations do).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from runtime.store.models import Base, TenantScoped

# --- audit trail (runtime.store.audit) --------------------------------------------------------


class AuditRecord(Base):
    """One `manage` or `admin` action: who, for which tenant, what, on what, when, request id.

    Append-only: rows are inserted with the change they record and removed only by
    retention (`FERRY_RETENTION_AUDIT_S`); nothing updates them. Not `TenantScoped`: an
    operator's action may belong to no tenant, and a function's `ctx.session` has no
    business reading it (the API filters by tenant itself).
    """

    __tablename__ = "audit_records"
    __table_args__ = (
        # Newest first across tenants (operators, retention oldest first) and per tenant.
        Index("ix_audit_records_at_id", "at", "id"),
        Index("ix_audit_records_tenant_id_at_id", "tenant_id", "at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[datetime]
    #: The tenant acted for; NULL for an operator's action of no tenant (a restore, an
    #: operator key). No foreign key: the record outlives anything it names.
    tenant_id: Mapped[str | None] = mapped_column(String(63))
    #: `key` (a tenant's API key), `operator` (an operator key), `cli`, or `system`.
    actor_kind: Mapped[str] = mapped_column(String(16))
    #: The API key's id, or the OS user who ran the command.
    actor_id: Mapped[str] = mapped_column(String(200))
    #: `noun.verb`: `invocation.cancel`, `schedule.pause`, `key.create`, ...
    action: Mapped[str] = mapped_column(String(64))
    #: What it acted on: an invocation, schedule, tenant or key id.
    target: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str] = mapped_column(String(200))
    #: A few facts of the action (scopes of a new key, invocations a trigger made); never a secret.
    detail: Mapped[dict[str, Any] | None]


# --- dashboard sessions (runtime.store.sessions) ---------------------------------------------


class DashboardSession(Base):
    """A dashboard sign-in, checked on every dashboard request (`runtime.services.sessions`).

    The browser holds the session's opaque id in a signed cookie; only its SHA-256 is
    stored, so a copy of this table opens no session. Ending a session (sign out, sign
    out everywhere, its key refused) sets `ended_at` and brings `expires_at` to that
    instant, so "still valid" and "removable" are both one comparison on `expires_at`.
    """

    __tablename__ = "dashboard_sessions"

    #: SHA-256 (hex) of the session id the cookie carries.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The API key signed in with; deleting the key removes its sessions.
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    #: The key's tenant when it signed in; NULL for an operator key.
    tenant_id: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]


# --- tenant secrets (runtime.store.secrets) --------------------------------------------------


class SecretKind(enum.StrEnum):
    """What a stored secret is for."""

    #: A value a function declared (`@function(secrets=[...])`), set by the tenant.
    FUNCTION = "function"
    #: A webhook signing secret Ferry made (`current`, and `previous` during its grace).
    WEBHOOK = "webhook"


class TenantSecret(TenantScoped, Base):
    """A tenant's secret, encrypted (`runtime.secrets.crypto`); never stored in the clear."""

    __tablename__ = "tenant_secrets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: `v1:<key id>:<base64url>`, bound to (tenant_id, kind, name).
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: When it stops being used (a previous webhook secret's grace); None: it does not.
    expires_at: Mapped[datetime | None]
