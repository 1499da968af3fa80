"""The dashboard's schedule pages and actions: pause, resume and trigger (admin)."""

from __future__ import annotations

import re
import secrets
import urllib.parse

import falcon
import structlog

from gateway.dashboard.auth import Viewer, action, first, page, redirect
from gateway.dashboard.resources import Base, actor_of, notice_of
from runtime.errors import BadRequest

log = structlog.get_logger("ferry.dashboard")


def schedule_path(schedule_id: str) -> str:
    return f"/dashboard/schedules/{urllib.parse.quote(schedule_id, safe='')}"


_TRIGGER_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


class Schedules(Base):
    """GET /dashboard/schedules."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer) -> None:
        schedules = self.read.schedules(viewer.read_tenant)
        tenants = self.read.tenant_ids() if viewer.is_admin else []
        self.render(
            resp, "schedules.html", viewer, nav="schedules", schedules=schedules, tenants=tenants
        )


class ScheduleItem(Base):
    """GET /dashboard/schedules/{id}; POST .../pause, .../resume and .../trigger (admin).

    An admin acts as in the API: across tenants, or for the tenant it filters by (a
    trigger then runs the schedule in that tenant alone).
    """

    @page
    def on_get(
        self, req: falcon.Request, resp: falcon.Response, viewer: Viewer, schedule_id: str
    ) -> None:
        schedule = self.read.schedule(viewer.read_tenant, schedule_id)
        self.render(
            resp,
            "schedule.html",
            viewer,
            nav="schedules",
            schedule=schedule,
            notice=notice_of(req),
            # A trigger form carries a token: submitting it twice runs the schedule once.
            trigger_token=secrets.token_urlsafe(16),
        )

    def _done(self, resp: falcon.Response, viewer: Viewer, schedule_id: str, notice: str) -> None:
        log.info(
            "dashboard_action",
            action=notice,
            schedule_id=schedule_id,
            key_id=viewer.principal.key_id,
            tenant_id=viewer.read_tenant,
        )
        redirect(resp, schedule_path(schedule_id) + viewer.query(notice=notice))

    @action("admin")
    def on_post_pause(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        viewer: Viewer,
        form: dict[str, list[str]],
        schedule_id: str,
    ) -> None:
        self.services.schedules.pause(schedule_id, viewer.read_tenant, actor=actor_of(req, viewer))
        self._done(resp, viewer, schedule_id, "paused")

    @action("admin")
    def on_post_resume(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        viewer: Viewer,
        form: dict[str, list[str]],
        schedule_id: str,
    ) -> None:
        self.services.schedules.resume(schedule_id, viewer.read_tenant, actor=actor_of(req, viewer))
        self._done(resp, viewer, schedule_id, "resumed")

    @action("admin")
    def on_post_trigger(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        viewer: Viewer,
        form: dict[str, list[str]],
        schedule_id: str,
    ) -> None:
        token = first(form, "token") or ""
        if not _TRIGGER_TOKEN.fullmatch(token):
            raise BadRequest("the trigger form lacks its token; reload the page")
        self.services.schedules.trigger(
            schedule_id,
            viewer.read_tenant,
            token=f"dashboard:{token}",
            request_id=str(req.context.get("request_id") or "") or None,
            actor=actor_of(req, viewer),
        )
        self._done(resp, viewer, schedule_id, "triggered")
