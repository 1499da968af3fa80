"""The audit trail: who did what, and reading it back (`GET /v1/audit`, the dashboard, the CLI).

Every `manage` and `admin` action is recorded once, with its actor: the service that
makes a change takes `actor: Actor` and hands `actor.entry(action, tenant_id=..., target=...)`
to the store method that makes it, which appends the record in the same transaction
(`runtime.store.audit.append_in`). A refused or failed action records nothing.

How to audit a new action (a new service method that changes something):

- give the method a keyword `actor: Actor = SYSTEM`; callers pass `Actor.of_key(principal,
  request_id)` (the API and the dashboard) or `Actor.cli()` (the CLI);
- where the change is one store unit of work, pass `audit=actor.entry("secret.set",
  tenant_id=tenant, target=name)` to the store method and, inside its `with
  self.db.session() as s:` once the change is made, call `append_in(s, audit, now)`;
- else call `self.store.audit.append(actor.entry(...))` (or `AuditTrail.record`) right
  after the change has been committed.

Actions are `noun.verb`: `invocation.cancel`, `invocation.retry`, `schedule.pause`,
`schedule.resume`, `schedule.delete`, `schedule.restore`, `schedule.trigger`,
`tenant.create`, `tenant.suspend`, `tenant.resume`, `tenant.set_retention`,
`key.create`, `key.revoke`, `secret.set`, `secret.delete`, `secret.rotate_webhook`,
`secret.rotate_encryption`, `tenant.set_limits`.
"""

from __future__ import annotations

import dataclasses
import getpass
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from runtime.errors import BadRequest
from runtime.store import Store
from runtime.store.audit import AuditEntry, AuditFilter, AuditRecordView
from runtime.store.tenants import Principal

#: The largest page a listing returns.
MAX_PAGE = 200


def _new_request_id() -> str:
    return uuid.uuid4().hex


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return "unknown"


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who acts, and under which request: what an audit record says of its author."""

    #: `key` (a tenant's API key), `operator` (an operator key), `cli`, or `system`.
    kind: str
    #: The key's id, or the OS user who ran the command.
    id: str
    #: The gateway's `X-Request-ID` (API and dashboard); a new one per CLI command.
    request_id: str

    @classmethod
    def of_key(cls, principal: Principal, request_id: str) -> Actor:
        """The holder of an API key, in the request `request_id` (API or dashboard)."""
        kind = "operator" if principal.is_operator else "key"
        return cls(kind, principal.key_id, request_id)

    @classmethod
    def cli(cls, user: str | None = None, request_id: str | None = None) -> Actor:
        """The OS user running a `ferry` command, under a new request id."""
        return cls("cli", user or _os_user(), request_id or _new_request_id())

    def entry(
        self,
        action: str,
        *,
        tenant_id: str | None,
        target: str,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """The record of this actor doing `action` on `target` for `tenant_id`."""
        return AuditEntry(
            actor_kind=self.kind,
            actor_id=self.id,
            request_id=self.request_id,
            action=action,
            tenant_id=tenant_id,
            target=target,
            detail=detail,
        )


#: Ferry itself, or a caller that named no actor (tests, `ferry dev`'s first start). Every
#: change is recorded, so a change made without an actor still shows, as `system`.
SYSTEM = Actor("system", "ferry", "-")


class AuditPage(NamedTuple):
    """One page of a newest-first listing; `next_cursor` is None on the last page."""

    records: list[AuditRecordView]
    next_cursor: str | None


class AuditTrail:
    """Read the trail (a tenant sees its own records, an operator all), and append to it."""

    def __init__(self, store: Store) -> None:
        self.log = store.audit

    def record(
        self,
        actor: Actor,
        action: str,
        *,
        tenant_id: str | None,
        target: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one record by itself, for a change already committed (one call)."""
        self.log.append(actor.entry(action, tenant_id=tenant_id, target=target, detail=detail))

    def list(
        self,
        tenant_id: str | None,
        *,
        action: str | None = None,
        target: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        """Records newest first; `tenant_id` None is every tenant's (an operator's view)."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}; got {limit}")
        for name, value in (("action", action), ("target", target), ("actor", actor)):
            if value is not None and len(value) > 255:
                raise BadRequest(f"{name} is at most 255 characters")
        if since is not None and until is not None and until <= since:
            raise BadRequest("until must be later than since")
        where = AuditFilter(action=action, target=target, actor_id=actor, since=since, until=until)
        records, next_cursor = self.log.list(tenant_id, where, limit=limit, cursor=cursor)
        return AuditPage(records, next_cursor)
