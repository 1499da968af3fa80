"""Schedules: list, read, trigger, pause, resume, delete and restore (`/v1/schedules`).

Reads need `read` and show what the caller's tenant sees (an admin key without
`X-Tenant-ID` sees everything): the schedules that make invocations in its tenant,
with its own runs only; another tenant's schedule answers 404 like a missing one (see
`runtime.services.schedules`). Every change needs `admin`. With `X-Tenant-ID`, an admin
acts for that tenant: a trigger then runs the schedule in that tenant alone.
"""

from __future__ import annotations

import falcon

from gateway import params, schemas
from gateway.hooks import require_scope
from gateway.middleware import actor_of, caller_of, request_id_of
from gateway.schemas import invocation_url
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
        resp.media = schemas.ScheduleList.of(views).media()


class ScheduleItem:
    """GET and DELETE /v1/schedules/{id}; POST .../trigger, .../pause and .../resume."""

    def __init__(self, control: ScheduleService) -> None:
        self.control = control

    @falcon.before(require_scope("read"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        view = self.control.get(schedule_id, caller_of(req).read_tenant_id)
        resp.media = schemas.Schedule.of(view).media()

    @falcon.before(require_scope("admin"))
    def on_delete(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        self.control.delete(schedule_id, caller_of(req).read_tenant_id, actor=actor_of(req))
        resp.status = falcon.HTTP_204

    @falcon.before(require_scope("admin"))
    def on_post_pause(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        view = self.control.pause(schedule_id, caller_of(req).read_tenant_id, actor=actor_of(req))
        resp.media = schemas.Schedule.of(view).media()

    @falcon.before(require_scope("admin"))
    def on_post_resume(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        view = self.control.resume(schedule_id, caller_of(req).read_tenant_id, actor=actor_of(req))
        resp.media = schemas.Schedule.of(view).media()

    @falcon.before(require_scope("admin"))
    def on_post_trigger(self, req: falcon.Request, resp: falcon.Response, schedule_id: str) -> None:
        invocations = self.control.trigger(
            schedule_id,
            caller_of(req).read_tenant_id,
            token=params.idempotency_key(req),
            request_id=request_id_of(req),
            actor=actor_of(req),
        )
        resp.status = falcon.HTTP_202
        if len(invocations) == 1:
            resp.location = invocation_url(invocations[0].id)
        resp.media = schemas.ScheduleTriggered(
            schedule_id=schedule_id,
            invocations=[schemas.Invocation.model_validate(i) for i in invocations],
        ).media()


class ScheduleRestore:
    """POST /v1/schedules/restore: every schedule in the code is registered again."""

    def __init__(self, control: ScheduleService) -> None:
        self.control = control

    @falcon.before(require_scope("admin"))
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        restored = self.control.restore(actor=actor_of(req))
        views = self.control.list(caller_of(req).read_tenant_id)
        resp.media = schemas.ScheduleRestored(
            restored=restored, schedules=[schemas.Schedule.of(view) for view in views]
        ).media()


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
