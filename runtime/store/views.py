"""Immutable views of stored rows: what the rest of Ferry passes around."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from runtime.store import models


def rfc3339(value: datetime | None) -> str | None:
    """Format a UTC time the way the API shows it: RFC 3339 with milliseconds."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclasses.dataclass(frozen=True)
class AttemptView:
    number: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: dict[str, Any] | None
    traceback: str | None
    worker_id: str | None

    @classmethod
    def from_row(cls, row: models.Attempt) -> AttemptView:
        return cls(
            number=row.number,
            started_at=row.started_at,
            finished_at=row.finished_at,
            outcome=row.outcome,
            error=row.error,
            traceback=row.traceback,
            worker_id=row.worker_id,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclasses.dataclass(frozen=True)
class InvocationView:
    id: str
    tenant_id: str
    function: str
    queue: str
    status: str
    trigger: str
    idempotency_key: str
    request_hash: str
    request_id: str | None
    parent_id: str | None
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    max_retries: int
    budget_start: int
    created_at: datetime
    scheduled_for: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    worker_id: str | None
    #: Its function's `concurrency_key` value in the input (`runtime.store.limits`).
    concurrency_key: str | None = None
    #: Why it waits although due (`runtime.store.limits.WAITING_REASONS`), or None.
    waiting_reason: str | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> InvocationView:
        """A view of `fields`, each of `INVOCATION_FIELDS` (those with a default may be left
        out), built without the generated `__init__`.

        A frozen dataclass's `__init__` sets each of the 26 fields through
        `object.__setattr__`: 3.5 µs a view against 0.3 µs here, and a batch accept builds
        a thousand. Nothing is checked here that `__init__` would check beyond the names,
        so every caller passes a complete set (tests/unit/test_views.py).
        """
        view = object.__new__(cls)
        view.__dict__.update(_DEFAULTS)
        view.__dict__.update(fields)
        return view

    @classmethod
    def from_row(cls, row: models.Invocation) -> InvocationView:
        return cls.from_fields({name: getattr(row, name) for name in INVOCATION_FIELDS})

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> InvocationView:
        """From a row as a mapping of its columns (`runtime.store.driver`, Core rows)."""
        return cls.from_fields({name: row[name] for name in INVOCATION_FIELDS})

    @property
    def finished(self) -> bool:
        return self.status in models.FINISHED

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)

    def evolve(self, **changes: Any) -> InvocationView:
        """A copy with `changes`, as `dataclasses.replace` makes it but without `__init__`
        (`from_fields`): a held accept's view is evolved once per request."""
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"InvocationView has no field {', '.join(sorted(unknown))}")
        return self.from_fields({**vars(self), **changes})

    def log_context(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "invocation_id": self.id,
            "function": self.function,
            "request_id": self.request_id,
        }

    def as_dict(self) -> dict[str, Any]:
        """The contract's `invocation` object (the payload is left out: it is not public)."""
        return {
            "id": self.id,
            "function": self.function,
            "tenant_id": self.tenant_id,
            "status": self.status,
            "trigger": self.trigger,
            "idempotency_key": self.idempotency_key,
            "request_id": self.request_id,
            "parent_id": self.parent_id,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "created_at": rfc3339(self.created_at),
            "scheduled_for": rfc3339(self.scheduled_for),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "duration_ms": self.duration_ms,
            "result": self.result,
            "error": self.error,
            "waiting_reason": self.waiting_reason,
        }


@dataclasses.dataclass(frozen=True)
class TenantView:
    id: str
    name: str
    status: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.Tenant) -> TenantView:
        return cls(id=row.id, name=row.name, status=row.status, created_at=row.created_at)

    @property
    def active(self) -> bool:
        return self.status == models.TenantStatus.ACTIVE


@dataclasses.dataclass(frozen=True)
class ApiKeyView:
    id: str
    #: None for an operator key.
    tenant_id: str | None
    name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: models.ApiKey) -> ApiKeyView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            scopes=frozenset(s for s in row.scopes.split(",") if s),
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


#: InvocationView's fields, in order: the columns of `invocations` a view holds.
INVOCATION_FIELDS = tuple(f.name for f in dataclasses.fields(InvocationView))
_FIELD_NAMES = frozenset(INVOCATION_FIELDS)
#: The fields with a default, and it: where `InvocationView.from_fields` starts.
_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(InvocationView)
    if f.default is not dataclasses.MISSING
}
