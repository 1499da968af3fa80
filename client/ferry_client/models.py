"""The API's answers as pydantic models: invocations, pages of them, and problems.

Unknown members are ignored, so a newer server that adds fields does not break an older
client. Times are parsed into timezone-aware `datetime`s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["scheduled", "queued", "running", "retrying", "succeeded", "failed", "cancelled"]
Trigger = Literal["http", "schedule", "invoke", "cli"]

#: The statuses an invocation never leaves by itself (a manual retry can still requeue it).
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InvocationError(Model):
    """Why a run failed: the exception's class name and its message."""

    type: str
    message: str


class InvocationReceipt(Model):
    """The id and status of an invocation: all a replayed invoke tells a key without `read`."""

    id: str
    status: Status

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class Invocation(InvocationReceipt):
    """One invocation of a function, as the API shows it (the input is never shown)."""

    function: str
    tenant_id: str
    trigger: Trigger
    idempotency_key: str
    request_id: str | None = None
    parent_id: str | None = None
    attempts: int
    max_retries: int
    created_at: datetime
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    result: Any = None
    error: InvocationError | None = None
    #: Why it waits although due (fair_share, tenant_concurrency, ...); None otherwise.
    waiting_reason: str | None = None


class Attempt(Model):
    """One run of an invocation."""

    number: int
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None
    error: InvocationError | None = None


class Callback(Model):
    """An invocation's completion callback and how delivering it went."""

    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None = None
    delivered_at: datetime | None = None


class InvocationDetail(Invocation):
    """One invocation with its attempt log (`GET /v1/invocations/{id}`)."""

    attempt_log: list[Attempt]
    #: Only when the invocation has a completion callback.
    callback: Callback | None = None


class InvocationPage(Model):
    """One page of `GET /v1/invocations`, newest first; `next_cursor` is None on the last."""

    invocations: list[Invocation]
    next_cursor: str | None = None


class FieldError(Model):
    """Where a validation failure is (`loc`) and what it is (`msg`)."""

    loc: list[str | int]
    msg: str


class Problem(Model):
    """An RFC 9457 problem document, as every error of the API is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = "about:blank"
    title: str = ""
    status: int
    detail: str = ""
    errors: list[FieldError] | None = None


class BatchAccepted(Model):
    """An item of a batch that is stored: new, or a replay of its key (`replayed`)."""

    index: int
    id: str
    status: Status
    replayed: bool

    @property
    def ok(self) -> bool:
        """Stored (new or replayed)."""
        return True


class BatchRefused(Model):
    """An item of a batch refused on its own: an invalid input or a key conflict (422)."""

    index: int
    status: int
    type: str = ""
    errors: list[FieldError] = []

    @property
    def ok(self) -> bool:
        """Refused: nothing stored for it."""
        return False


BatchItemResult = BatchAccepted | BatchRefused
