"""The API's operations: one row per method and path, over the models of `gateway.schemas`.

`gateway.openapi` turns this table (and each function's own invoke path, made with
`invoke_operation`) into the OpenAPI document; a new route adds its row here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import pydantic

from gateway import schemas
from gateway.batch_schemas import BatchRequest, BatchResult
from gateway.links import INVOCATION_LINKS, SCHEDULE_LINKS
from gateway.schemas import (
    LIMITS_UPDATE_SCHEMA,
    AuditList,
    Function,
    FunctionList,
    Invocation,
    InvocationDetail,
    InvocationList,
    InvocationReceipt,
    Liveness,
    NotReady,
    Readiness,
    Schedule,
    ScheduleList,
    ScheduleRestored,
    ScheduleTriggered,
    TenantLimits,
)

#: What an answer's body is: a model, a plain JSON schema, or nothing (None).
BodySchema = type[pydantic.BaseModel] | dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Operation:
    """One method on one path, as the document tells it."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    #: Status code -> body of the answers that are not the shared problems below.
    answers: Mapping[int, BodySchema]
    #: Problem statuses besides those every operation with a key can answer (401, 403, 404, 503).
    problems: tuple[int, ...] = ()
    #: Names under components/parameters.
    parameters: tuple[str, ...] = ()
    #: Headers (under components/headers) of the success answers.
    headers: tuple[str, ...] = ()
    #: No API key needed.
    public: bool = False
    request_body: dict[str, Any] | None = None
    description: str = ""
    #: Status code -> names under components/links: operations its answer leads to.
    links: Mapping[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


#: The parameters of every invoke operation, besides its path's.
INVOKE_PARAMETERS = ("IdempotencyKey", "CallbackUrl", "wait", "delay", "at")


def invoke_operation(
    operation_id: str,
    summary: str,
    body: dict[str, Any],
    answer: BodySchema,
    path: str = "/v1/functions/{name}/invocations",
    description: str = "",
) -> Operation:
    """An invoke operation: 200 when the invocation it answers with is finished, else 202.

    A replay answered to a key without `read` is an `InvocationReceipt` (id and status).
    """
    if isinstance(answer, type):
        answer = ref("schemas", answer.__name__)
    answer = {"anyOf": [answer, ref("schemas", InvocationReceipt.__name__)]}
    return Operation(
        "post",
        path,
        operation_id,
        summary,
        "functions",
        {200: answer, 202: answer},
        problems=(400, 413, 415, 422, 429),
        parameters=(*re.findall(r"\{(\w+)\}", path), *INVOKE_PARAMETERS),
        headers=("Location", "IdempotentReplayed"),
        request_body=body,
        description=description or INVOKE_DESCRIPTION,
        links={200: INVOCATION_LINKS, 202: INVOCATION_LINKS},
    )


INVOKE_DESCRIPTION = (
    "200 with the invocation once it is finished (after `wait`, or a replay of a finished "
    "one); 202 while it is queued, scheduled or running. A replay answered to a key without "
    "`read` carries the id and status only. A function may need a scope beyond `invoke` "
    "(its `invoke_scope`), and an internal one is an operator key's alone (403)."
)
BATCH_DESCRIPTION = (
    "One validation pass, one commit, one broker round trip. The answer has one entry per "
    "item, in order: its invocation's id and status (`replayed` when its idempotency key "
    "was stored before with the same input), or its own 422 errors (an invalid input, or a "
    "key used before with another input), and then nothing is stored for it. A key given "
    "twice in one batch: the later item is a replay of the first if the inputs are equal, "
    "else a conflict. 200 when every item is a replay, else 202. A limit refuses the whole "
    "batch (429, nothing stored), and so does a secret the function needs that the tenant "
    "has not set (422). `delay`, `at` and `Ferry-Callback-URL` apply to every item."
)
ITEM, SCHEDULE, SECRET = ("invocation_id",), ("schedule_id",), ("secret_name",)
# fmt: off
OPERATIONS = (
    Operation("get", "/healthz", "healthz", "Liveness: 200 while the process lives.",
              "operations", {200: Liveness}, public=True),
    Operation("get", "/readyz", "readyz", "Readiness: 200 when the store answers.",
              "operations", {200: Readiness, 503: NotReady}, public=True),
    Operation("get", "/openapi.json", "openapi", "This OpenAPI 3.1 document.", "operations",
              {200: {"type": "object", "required": ["openapi", "info", "paths"]}}, public=True),
    Operation("get", "/v1/functions", "list_functions", "Every function of this deployment.",
              "functions", {200: FunctionList}),
    Operation("get", "/v1/functions/{name}", "get_function", "One function.", "functions",
              {200: Function}, parameters=("name",)),
    invoke_operation("invoke", "Invoke a function by name (each function's own path has its schemas).",
            {"type": "object", "description": "The function's input: a JSON object."}, Invocation),
    Operation("post", "/v1/functions/{name}/invocations/batch", "invoke_batch",
              "Invoke a function for up to 1,000 inputs at once.", "functions",
              {200: BatchResult, 202: BatchResult}, problems=(400, 413, 415, 422, 429),
              parameters=("name", "CallbackUrl", "delay", "at"),
              request_body=ref("schemas", BatchRequest.__name__),
              description=BATCH_DESCRIPTION),
    Operation("get", "/v1/invocations", "list_invocations", "Invocations, newest first, in pages.",
              "invocations", {200: InvocationList}, problems=(400,),
              parameters=("function", "status", "limit", "cursor"),
              links={200: ("GetFirstInvocation",)}),
    Operation("get", "/v1/invocations/{invocation_id}", "get_invocation",
              "One invocation with its attempt log.", "invocations", {200: InvocationDetail},
              parameters=ITEM),
    Operation("post", "/v1/invocations/{invocation_id}/cancel", "cancel_invocation",
              "Cancel an invocation that is not yet running.", "invocations", {200: Invocation},
              problems=(409,), parameters=ITEM,
              links={200: ("GetInvocation", "RetryInvocation")}),
    Operation("post", "/v1/invocations/{invocation_id}/retry", "retry_invocation",
              "Queue a failed or cancelled invocation again.", "invocations", {202: Invocation},
              problems=(409,), parameters=ITEM, headers=("Location",),
              links={202: INVOCATION_LINKS}),
    Operation("get", "/v1/schedules", "list_schedules",
              "Schedules with next run, last run and recent history.", "schedules",
              {200: ScheduleList}, links={200: ("GetListedSchedule",)}),
    Operation("post", "/v1/schedules/restore", "restore_schedules",
              "Register every schedule in the code again (admin).", "schedules",
              {200: ScheduleRestored}),
    Operation("get", "/v1/schedules/{schedule_id}", "get_schedule",
              "One schedule, its next five runs and its history.", "schedules", {200: Schedule},
              parameters=SCHEDULE, links={200: (*SCHEDULE_LINKS, "DeleteSchedule")}),
    Operation("delete", "/v1/schedules/{schedule_id}", "delete_schedule",
              "Stop a schedule until restored (admin).", "schedules", {204: None},
              parameters=SCHEDULE),
    Operation("post", "/v1/schedules/{schedule_id}/trigger", "trigger_schedule",
              "Run a schedule now (admin).", "schedules", {202: ScheduleTriggered},
              problems=(400,), parameters=(*SCHEDULE, "IdempotencyKey"),
              headers=("MaybeLocation",), links={202: ("GetFirstInvocation",)}),
    Operation("post", "/v1/schedules/{schedule_id}/pause", "pause_schedule",
              "Pause a schedule; it stays paused across restarts (admin).", "schedules",
              {200: Schedule}, parameters=SCHEDULE, links={200: SCHEDULE_LINKS}),
    Operation("post", "/v1/schedules/{schedule_id}/resume", "resume_schedule",
              "Resume a schedule from its next tick (admin).", "schedules", {200: Schedule},
              parameters=SCHEDULE, links={200: SCHEDULE_LINKS}),
    Operation("get", "/v1/audit", "list_audit_records",
              "The audit trail of manage and admin actions, newest first (manage).", "audit",
              {200: AuditList}, problems=(400,),
              parameters=("audit_action", "audit_target", "audit_actor", "since", "until",
                          "limit", "cursor"),
              description="A tenant's key sees its tenant's records; an operator key every "
              "tenant's, or one tenant's with X-Tenant-ID. Records are kept for "
              "FERRY_RETENTION_AUDIT_S and never changed."),
    Operation("get", "/v1/secrets", "list_secrets", "The tenant's function secrets: names and "
              "times, never values (manage).", "secrets", {200: schemas.SecretList}),
    Operation("put", "/v1/secrets/{secret_name}", "set_secret", "Set a function secret; no "
              "answer ever shows it (manage).", "secrets", {200: schemas.SecretInfo},
              problems=(400, 413, 415, 422), parameters=SECRET,
              request_body=ref("schemas", schemas.SecretValue.__name__)),
    Operation("delete", "/v1/secrets/{secret_name}", "delete_secret", "Remove a function "
              "secret (manage).", "secrets", {204: None}, problems=(400,), parameters=SECRET),
    Operation("get", "/v1/webhook-secret", "get_webhook_secret", "The webhook signing secret, "
              "made on first use (manage).", "secrets", {200: schemas.WebhookSecret}),
    Operation("post", "/v1/webhook-secret/rotate", "rotate_webhook_secret", "A new webhook "
              "signing secret; the old one signs too until previous_expires_at (manage).",
              "secrets", {200: schemas.WebhookSecret}, problems=(409,)),
    Operation("get", "/v1/tenants/{tenant_id}/limits", "get_tenant_limits",
              "A tenant's limits and its waiting and running counts (admin).", "tenants",
              {200: TenantLimits}, parameters=("tenant_id",)),
    Operation("put", "/v1/tenants/{tenant_id}/limits", "set_tenant_limits",
              "Replace a tenant's limits; those left out follow the default (admin).", "tenants",
              {200: TenantLimits}, problems=(400, 413, 415, 422), parameters=("tenant_id",),
              request_body=LIMITS_UPDATE_SCHEMA),
)
# fmt: on
