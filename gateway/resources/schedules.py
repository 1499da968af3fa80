"""Schedules: list, read, trigger, pause, resume, delete and restore (`/v1/schedules`).

Reads need `read` and show what the caller's tenant sees (an admin key without
`X-Tenant-ID` sees everything): the schedules that make invocations in its tenant,
with its own runs only; another tenant's schedule answers 404 like a missing one (see
`runtime.services.schedules`). Every change needs `admin`. With `X-Tenant-ID`, an admin
acts for that tenant: a trigger then runs the schedule in that tenant alone.
"""

from __future__ import annotations

from typing import Any

import falcon

from gateway import params
from gateway.hooks import require_scope
from gateway.middleware import caller_of, request_id_of
from gateway.openapi import ApiPart, json_content, problems, schema_ref
from gateway.resources.functions import invocation_url
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.services.schedules import ScheduleService


class ScheduleCollection:
    """GET /v1/schedules."""

    def __init__(self, control: ScheduleService) -> None:
        self.control = control

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        views = self.control.list(caller_of(req).read_tenant_id)
        resp.media = {"schedules": [view.as_dict() for view in views]}


class ScheduleItem:
    """GET and DELETE /v1/schedules/{id}; POST .../trigger, .../pause and .../resume."""

    def __init__(self, control: ScheduleService) -> None:
        self.control = control

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        resp.media = self.control.get(schedule_id, caller_of(req).read_tenant_id).as_dict()

    @falcon.before(require_scope("admin"))
    def on_delete(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        self.control.delete(schedule_id, caller_of(req).read_tenant_id)
        resp.status = falcon.HTTP_204

    @falcon.before(require_scope("admin"))
    def on_post_pause(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        resp.media = self.control.pause(schedule_id, caller_of(req).read_tenant_id).as_dict()

    @falcon.before(require_scope("admin"))
    def on_post_resume(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        resp.media = self.control.resume(schedule_id, caller_of(req).read_tenant_id).as_dict()

    @falcon.before(require_scope("admin"))
    def on_post_trigger(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        invocations = self.control.trigger(
            schedule_id,
            caller_of(req).read_tenant_id,
            token=params.idempotency_key(req),
            request_id=request_id_of(req),
        )
        resp.status = falcon.HTTP_202
        if len(invocations) == 1:
            resp.location = invocation_url(invocations[0].id)
        resp.media = {
            "schedule_id": schedule_id,
            "invocations": [invocation.as_dict() for invocation in invocations],
        }


class ScheduleRestore:
    """POST /v1/schedules/restore: every schedule in the code is registered again."""

    def __init__(self, control: ScheduleService) -> None:
        self.control = control

    @falcon.before(require_scope("admin"))
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        restored = self.control.restore()
        views = self.control.list(caller_of(req).read_tenant_id)
        resp.media = {"restored": restored, "schedules": [view.as_dict() for view in views]}


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    """Mount the schedule routes; loading the schedules here stops start-up on a bad one."""
    control = runtime.schedules
    item = ScheduleItem(control)
    app.add_route("/v1/schedules", ScheduleCollection(control))
    app.add_route("/v1/schedules/restore", ScheduleRestore(control))
    app.add_route("/v1/schedules/{schedule_id}", item)
    for action in ("trigger", "pause", "resume"):
        app.add_route(f"/v1/schedules/{{schedule_id}}/{action}", item, suffix=action)


#: The name the schedules work was asked to expose; `add_routes` is the gateway's protocol.
add_schedule_routes = add_routes


# --- OpenAPI ---------------------------------------------------------------------------------

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "ScheduleRun": {
        "type": "object",
        "description": "One invocation a schedule made.",
        "properties": {
            "tick_at": {**_TIME, "description": "The tick, or when it was triggered."},
            "kind": {"type": "string", "enum": ["tick", "manual"]},
            "lateness_ms": {
                "type": ["integer", "null"],
                "description": "How long after `scheduled_for` it started.",
            },
            "invocation": schema_ref("Invocation"),
        },
    },
    "Schedule": {
        "type": "object",
        "required": ["id", "function", "tenant", "cron", "timezone", "paused", "history"],
        "properties": {
            "id": {"type": "string"},
            "description": {"type": "string"},
            "function": {"type": "string"},
            "tenant": {"type": "string", "description": "A tenant id, or `*`: each active one."},
            "each_active_tenant": {"type": "boolean"},
            "cron": {"type": "string"},
            "timezone": {"type": "string", "description": "IANA time zone of the cron fields."},
            "input": {"type": "object"},
            "misfire": {"type": "string", "enum": ["skip", "run_once"]},
            "misfire_grace_s": {"type": "number"},
            "jitter_s": {"type": "number"},
            "paused": {"type": "boolean"},
            "paused_at": _NULLABLE_TIME,
            "next_run_at": _NULLABLE_TIME,
            "next_run_times": {
                "type": "array",
                "items": _TIME,
                "description": "Upcoming ticks (five in the single view); none while paused.",
            },
            "last_run_at": _NULLABLE_TIME,
            "last_invocation_id": {"type": ["string", "null"]},
            "history": {"type": "array", "items": schema_ref("ScheduleRun")},
        },
    },
    "ScheduleList": {
        "type": "object",
        "properties": {"schedules": {"type": "array", "items": schema_ref("Schedule")}},
    },
    "ScheduleTriggered": {
        "type": "object",
        "properties": {
            "schedule_id": {"type": "string"},
            "invocations": {"type": "array", "items": schema_ref("Invocation")},
        },
    },
    "ScheduleRestored": {
        "type": "object",
        "properties": {
            "restored": {"type": "array", "items": {"type": "string"}},
            "schedules": {"type": "array", "items": schema_ref("Schedule")},
        },
    },
}


def describe_api(runtime: Runtime) -> ApiPart:
    schedule_id: dict[str, Any] = {
        "name": "schedule_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    tenant: dict[str, Any] = {"$ref": "#/components/parameters/XTenantId"}

    def operation(
        operation_id: str,
        summary: str,
        status: str,
        description: str,
        schema: str | None,
        codes: tuple[int, ...],
        parameters: list[dict[str, Any]],
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {"description": description}
        if schema is not None:
            answer["content"] = json_content(schema_ref(schema))
        return {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["schedules"],
            "parameters": parameters,
            "responses": {status: answer, **problems(*codes)},
        }

    item = [schedule_id, tenant]
    trigger = operation(
        "trigger_schedule",
        "Run a schedule now (admin).",
        "202",
        "Accepted.",
        "ScheduleTriggered",
        (400, 403, 404),
        item,
    )
    trigger["parameters"] = [
        *item,
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "A retried trigger with the same key runs it once.",
        },
    ]
    return ApiPart(
        paths={
            "/v1/schedules": {
                "get": operation(
                    "list_schedules",
                    "Schedules with next run, last run and recent history.",
                    "200",
                    "The schedules.",
                    "ScheduleList",
                    (403,),
                    [tenant],
                )
            },
            "/v1/schedules/restore": {
                "post": operation(
                    "restore_schedules",
                    "Register every schedule in the code again (admin).",
                    "200",
                    "Restored.",
                    "ScheduleRestored",
                    (403,),
                    [tenant],
                )
            },
            "/v1/schedules/{schedule_id}": {
                "get": operation(
                    "get_schedule",
                    "One schedule, its next five runs and its history.",
                    "200",
                    "The schedule.",
                    "Schedule",
                    (403, 404),
                    item,
                ),
                "delete": operation(
                    "delete_schedule",
                    "Stop a schedule until restored (admin).",
                    "204",
                    "Deleted.",
                    None,
                    (403, 404),
                    item,
                ),
            },
            "/v1/schedules/{schedule_id}/trigger": {"post": trigger},
            "/v1/schedules/{schedule_id}/pause": {
                "post": operation(
                    "pause_schedule",
                    "Pause a schedule; it stays paused across restarts (admin).",
                    "200",
                    "Paused.",
                    "Schedule",
                    (403, 404),
                    item,
                )
            },
            "/v1/schedules/{schedule_id}/resume": {
                "post": operation(
                    "resume_schedule",
                    "Resume a schedule from its next tick (admin).",
                    "200",
                    "Resumed.",
                    "Schedule",
                    (403, 404),
                    item,
                )
            },
        },
        schemas=SCHEMAS,
    )
