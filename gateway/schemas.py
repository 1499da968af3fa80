"""The API's bodies as pydantic models: they render every answer and make /openapi.json.

Field names are the contract's. Times are RFC 3339 in UTC with milliseconds. Models read
the runtime's views by attribute (`model_validate(view)`), so no field is mapped by hand.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from runtime.registry import Function as FunctionRuntime
from runtime.scheduling.definition import Misfire
from runtime.services.schedules import ScheduleView
from runtime.store.callbacks import CallbackView
from runtime.store.models import Status
from runtime.store.views import AttemptView, InvocationView


def _rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds; the year has four digits even before 1000."""
    utc = value.astimezone(UTC) if value.tzinfo is not None else value
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


Time = Annotated[
    datetime,
    PlainSerializer(_rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Trigger = Literal["http", "schedule", "invoke", "cli"]
JsonObject = dict[str, Any]


def invoke_url(name: str) -> str:
    return f"/v1/functions/{urllib.parse.quote(name, safe='')}/invocations"


def invocation_url(invocation_id: str) -> str:
    return f"/v1/invocations/{urllib.parse.quote(invocation_id, safe='')}"


class Body(BaseModel):
    """A JSON body with exactly these fields; read from a view's attributes or from a dict."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    def media(self) -> dict[str, Any]:
        """The body as Falcon's `resp.media`."""
        return self.model_dump(mode="json")


class FieldError(Body):
    """Where a validation failure is (`loc`) and what it is (`msg`)."""

    loc: list[str | int]
    msg: str


def _no_default(schema: dict[str, Any]) -> None:
    # A member that is left out when it has nothing to tell is never sent as null.
    schema.pop("default", None)


class Problem(BaseModel):
    """An RFC 9457 problem document; validation failures add `errors`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(json_schema_extra={"format": "uri-reference"})
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        default=None, description="Only for validation failures.", json_schema_extra=_no_default
    )

    def media(self) -> dict[str, Any]:
        # Unset members stay out: `errors` only when there are errors to tell.
        return self.model_dump(mode="json", exclude_unset=True)


class NotReady(Problem):
    """503 from /readyz: the problem, with the state of each dependency."""

    checks: dict[str, str]


class Function(Body):
    """The contract's `function`."""

    name: str
    description: str = Field(description="The function module's docstring.")
    queue: Literal["default", "heavy", "scheduled"]
    max_retries: int
    timeout_s: float
    input_schema: JsonObject = Field(description="JSON Schema of the input.")
    output_schema: JsonObject | None = Field(description="JSON Schema of `result`, if any.")
    invoke_url: str
    invoke_scope: Literal["invoke", "manage", "admin"] = Field(
        description="The scope an API key needs to invoke it over HTTP."
    )
    internal: bool = Field(
        description="Run by schedules, other functions and operator keys only: over HTTP, "
        "a tenant's key is refused with 403."
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Names of the tenant's secrets it reads; invoking it is a 422 while "
        "one is not set (PUT /v1/secrets/{secret_name}).",
    )

    @classmethod
    def of(cls, function: FunctionRuntime) -> Function:
        return cls.model_validate({**function.describe(), "invoke_url": invoke_url(function.name)})


class FunctionList(Body):
    functions: list[Function]


class InvocationError(Body):
    type: str = Field(description="The exception's class name.")
    message: str


class Invocation(Body):
    """The contract's `invocation` (the input is not shown)."""

    id: str
    function: str
    tenant_id: str
    status: Status
    trigger: Trigger
    idempotency_key: str
    request_id: str | None
    parent_id: str | None
    attempts: int = Field(description="How many runs have started.")
    max_retries: int
    created_at: Time
    scheduled_for: Time | None
    started_at: Time | None
    finished_at: Time | None
    duration_ms: int | None
    result: Any = Field(description="The function's output once it succeeded.")
    error: InvocationError | None
    waiting_reason: str | None = Field(
        default=None,
        description="Why it waits although due (docs/fairness.md): fair_share, "
        "tenant_concurrency, function_concurrency or key_concurrency; null otherwise.",
    )


class Attempt(Body):
    """One run of an invocation."""

    number: int
    started_at: Time
    finished_at: Time | None
    outcome: str | None = Field(description="succeeded, retrying, failed or timed_out.")
    error: InvocationError | None


class InvocationReceipt(Body):
    """A replay answered to a key without `read`: which invocation, and its status only."""

    id: str
    status: Status


class Callback(Body):
    """The invocation's completion callback and how delivering it went (docs/callbacks.md)."""

    url: str
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending until delivered (a 2xx answer) or failed for good."
    )
    attempts: int = Field(description="Deliveries tried so far.")
    last_error: str | None = Field(description="Why the last try failed; null once delivered.")
    delivered_at: Time | None


class InvocationDetail(Invocation):
    """One invocation with its attempt log, and its callback when it has one."""

    attempt_log: list[Attempt]
    callback: Callback | None = Field(
        default=None,
        description="Only when the invocation has a completion callback.",
        json_schema_extra=_no_default,
    )

    @classmethod
    def of(
        cls,
        view: InvocationView,
        attempts: Iterable[AttemptView],
        callback: CallbackView | None = None,
    ) -> InvocationDetail:
        fields = dict(Invocation.model_validate(view))
        return cls(
            **fields,
            attempt_log=[Attempt.model_validate(a) for a in attempts],
            callback=None if callback is None else Callback.model_validate(callback),
        )

    def media(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"callback"} if self.callback is None else None)


class InvocationList(Body):
    invocations: list[Invocation]
    next_cursor: str | None = Field(description="The `cursor` of the next page; null at the end.")


class ScheduleRun(Body):
    """One invocation a schedule made."""

    tick_at: Time = Field(description="The tick, or when it was triggered.")
    kind: Literal["tick", "manual"]
    lateness_ms: int | None = Field(description="How long after `scheduled_for` it started.")
    invocation: Invocation


class Schedule(Body):
    """A schedule as the caller's tenant sees it, with its recent runs."""

    id: str
    description: str
    function: str
    tenant: str = Field(description="A tenant id, or `*`: each active one.")
    each_active_tenant: bool
    cron: str
    timezone: str = Field(description="IANA time zone of the cron fields.")
    input: JsonObject
    misfire: Misfire
    misfire_grace_s: float
    jitter_s: float
    paused: bool
    paused_at: Time | None
    next_run_at: Time | None
    next_run_times: list[Time] = Field(
        description="Upcoming ticks (five in the single view); none while paused."
    )
    last_run_at: Time | None
    last_invocation_id: str | None
    history: list[ScheduleRun]

    @classmethod
    def of(cls, view: ScheduleView) -> Schedule:
        return cls.model_validate(view.as_dict())


class ScheduleList(Body):
    schedules: list[Schedule]

    @classmethod
    def of(cls, views: Iterable[ScheduleView]) -> ScheduleList:
        return cls(schedules=[Schedule.of(view) for view in views])


class ScheduleTriggered(Body):
    schedule_id: str
    invocations: list[Invocation]


class ScheduleRestored(Body):
    restored: list[str] = Field(description="The ids registered again.")
    schedules: list[Schedule]


class AuditRecord(Body):
    """One `manage` or `admin` action: who, for which tenant, what, on what, when."""

    id: str
    at: Time
    tenant_id: str | None = Field(description="The tenant acted for; null: none (an operator's).")
    actor_kind: Literal["key", "operator", "cli", "system"] = Field(
        description="A tenant's API key, an operator key, a `ferry` command, or Ferry itself."
    )
    actor_id: str = Field(description="The key's id, or the OS user who ran the command.")
    action: str = Field(description="`noun.verb`, like `invocation.cancel` or `schedule.pause`.")
    target: str = Field(description="The invocation, schedule, tenant or key acted on.")
    request_id: str = Field(description="The request's X-Request-ID (a command makes its own).")
    detail: JsonObject | None


class AuditList(Body):
    records: list[AuditRecord]
    next_cursor: str | None = Field(description="The `cursor` of the next page; null at the end.")


class Liveness(Body):
    status: Literal["ok"]


class LimitValues(Body):
    """Per-tenant limits; 0 is unlimited for the rate, concurrency and waiting."""

    rate_per_s: float | None = Field(description="Accepts per second (token bucket).")
    burst: int | None = Field(description="Accepts at once after a quiet spell.")
    concurrency: int | None = Field(description="Invocations running at once.")
    max_waiting: int | None = Field(description="Invocations queued, scheduled or retrying.")
    weight: int | None = Field(description="Share of worker slots in fair dispatch.")


class TenantLimits(Body):
    """A tenant's own limits (null: the deployment's default), those that hold, and its work."""

    tenant_id: str
    own: LimitValues
    effective: LimitValues
    waiting: int = Field(description="Invocations queued, scheduled or retrying now.")
    running: int = Field(description="Invocations running now.")


#: The body of `PUT /v1/tenants/{tenant_id}/limits`: the limits it names, the others default.
LIMITS_UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        name: {"type": ["number", "null"] if name == "rate_per_s" else ["integer", "null"]}
        for name in ("rate_per_s", "burst", "concurrency", "max_waiting", "weight")
    },
}


class Readiness(Body):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="`ok` or what failed, per dependency.")


class SecretInfo(Body):
    """A tenant's function secret as shown: its name and times, never its value."""

    name: str
    created_at: Time
    updated_at: Time


class SecretList(Body):
    secrets: list[SecretInfo]


class SecretValue(Body):
    """The body of PUT /v1/secrets/{secret_name}."""

    value: str = Field(min_length=8, max_length=65_536, description="The secret's value.")


class WebhookSecret(Body):
    """The tenant's webhook signing secret (`Ferry-Signature` is its HMAC-SHA256)."""

    secret: str = Field(description="`whsec_...`; the HMAC key is this text's UTF-8 bytes.")
    created_at: Time
    previous_expires_at: Time | None = Field(
        description="Until then the previous secret signs too (a second `v1=`); null: "
        "there is none."
    )


#: Every model the document lists under components/schemas.
MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    NotReady,
    Function,
    FunctionList,
    Invocation,
    InvocationReceipt,
    InvocationDetail,
    InvocationList,
    Schedule,
    ScheduleList,
    ScheduleTriggered,
    ScheduleRestored,
    AuditRecord,
    AuditList,
    Liveness,
    Readiness,
    SecretInfo,
    SecretList,
    SecretValue,
    WebhookSecret,
    LimitValues,
    TenantLimits,
)
