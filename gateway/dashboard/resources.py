"""The dashboard's pages and actions: thin resources over the read model and the services.

Actions answer with a redirect (POST, then redirect, then GET), so a reload never
repeats one; the outcome shows as a notice chosen from a fixed list, never text taken
from the request.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import falcon
import structlog

from gateway import params
from gateway.dashboard.auth import Gate, Viewer, action, first, page, redirect, safe_next
from gateway.dashboard.readmodel import InvocationFilter
from gateway.dashboard.rendering import STATIC, auto_refresh, page_headers
from gateway.dashboard.sessions import LOGIN_COOKIE, LOGIN_FORM_MAX_AGE_S, SESSION_COOKIE
from gateway.dashboard.trends import WINDOWS, read_trends, window_of
from runtime.errors import BadRequest, TenantSuspended
from runtime.services.audit import Actor, AuditTrail
from runtime.services.invocations import InvocationService
from runtime.services.limits import LimitService
from runtime.services.schedules import ScheduleService
from runtime.services.tenants import TenantService

log = structlog.get_logger("ferry.dashboard")

NOTICES = {
    "retried": "Queued again.",
    "cancelled": "Cancelled.",
    "paused": "Paused: it makes no invocations until resumed.",
    "resumed": "Resumed.",
    "triggered": "Triggered: its invocations are listed below.",
    "signed-out": "Signed out.",
    "signed-out-everywhere": "Signed out: every session of that API key has ended.",
    "nothing-selected": "Select at least one invocation.",
    "invoked": "Invoked: this is the new invocation.",
    "replayed": "That idempotency key was used before with the same input: this is its invocation.",
}
_DATETIME_LOCAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")


def notice_of(req: falcon.Request) -> str | None:
    code = req.get_param("notice")
    if code == "bulk":
        retried = req.get_param_as_int("retried", min_value=0) or 0
        skipped = req.get_param_as_int("skipped", min_value=0) or 0
        return f"{retried} queued again; {skipped} skipped (no longer failed, or not yours)."
    return NOTICES.get(code or "")


def invocation_path(invocation_id: str) -> str:
    return f"/dashboard/invocations/{urllib.parse.quote(invocation_id, safe='')}"


def _time_param(req: falcon.Request, name: str) -> datetime | None:
    text = (req.get_param(name) or "").strip()
    if not text:
        return None
    if not _DATETIME_LOCAL.fullmatch(text):
        raise BadRequest(f"{name} must be a date and time like 2030-01-31T09:00 (UTC)")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError as ex:
        raise BadRequest(f"{name} is not a valid date and time") from ex


def _filter(req: falcon.Request, viewer: Viewer) -> InvocationFilter:
    function = req.get_param("function") or None
    if function is not None and len(function) > 200:
        raise BadRequest("function names are at most 200 characters")
    return InvocationFilter(
        function=function,
        # A filter form sends its empty choices as empty values.
        status=params.status(req) if req.get_param("status") else None,
        tenant=viewer.tenant_filter,
        created_from=_time_param(req, "from"),
        created_to=_time_param(req, "to"),
    )


@dataclasses.dataclass(frozen=True)
class Services:
    """What the dashboard's actions call: the use cases the API calls too."""

    invocations: InvocationService
    tenants: TenantService
    schedules: ScheduleService
    audit: AuditTrail
    limits: LimitService
    #: The deployment's function names, for the listings' filters.
    function_names: tuple[str, ...]


class Base:
    public = True  # the dashboard checks its own session; the API's bearer auth is not asked

    def __init__(self, gate: Gate, services: Services) -> None:
        self.gate = gate
        self.read = gate.read
        self.services = services

    def render(
        self, resp: falcon.Response, template: str, viewer: Viewer | None, **context: Any
    ) -> None:
        self.gate.renderer.render(resp, template, viewer=viewer, **context)


class Login(Base):
    """GET /dashboard/login: the form; POST: sign in with an API key."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.gate.viewer(req, resp) is not None:
            redirect(resp, safe_next(req.get_param("next")))
            return
        self._form(req, resp, status=200, error=None)

    def _form(
        self, req: falcon.Request, resp: falcon.Response, *, status: int, error: str | None
    ) -> None:
        cookie, token = self.gate.signer.login_nonce()
        self.gate.signer.set_cookie(req, resp, LOGIN_COOKIE, cookie, LOGIN_FORM_MAX_AGE_S)
        self.gate.renderer.render(
            resp,
            "login.html",
            status=status,
            viewer=None,
            nav="",
            csrf_token=token,
            next=safe_next(req.get_param("next")),
            error=error,
            notice=notice_of(req),
        )

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        from gateway.dashboard.auth import read_form

        try:
            form = read_form(req)
        except BadRequest as ex:
            self.gate.error_page(resp, 400, ex.message, None)
            return
        signer = self.gate.signer
        if not signer.login_valid(req.cookies.get(LOGIN_COOKIE), first(form, "csrf_token")):
            log.warning("dashboard_csrf_refused", path=req.path)
            self.gate.error_page(
                resp, 403, "This login form has expired; reload it and try again.", None
            )
            return
        try:
            principal = self.services.tenants.authenticate((first(form, "api_key") or "").strip())
        except TenantSuspended as ex:
            log.info("dashboard_login_refused", reason="tenant_suspended")
            self._form(req, resp, status=403, error=ex.message)
            return
        if principal is None:
            log.info("dashboard_login_refused", reason="unknown_key")
            resp.set_header("WWW-Authenticate", 'Bearer realm="ferry"')
            self._form(req, resp, status=401, error="That API key is unknown, revoked or expired.")
            return
        if not principal.has("read"):
            log.info("dashboard_login_refused", reason="scope", key_id=principal.key_id)
            self._form(
                req,
                resp,
                status=403,
                error="That API key lacks the 'read' scope the dashboard needs.",
            )
            return
        session = self.gate.sessions.login(principal)
        cookie = signer.issue(session.session_id)
        signer.set_cookie(req, resp, SESSION_COOKIE, cookie, signer.options.max_age_s)
        signer.clear_cookie(req, resp, LOGIN_COOKIE)
        log.info("dashboard_login", key_id=principal.key_id, tenant_id=principal.tenant_id)
        redirect(resp, safe_next(first(form, "next")))


class Logout(Base):
    """POST /dashboard/logout ends this session; POST .../everywhere every session of the key."""

    @action("read")
    def on_post(
        self, req: falcon.Request, resp: falcon.Response, viewer: Viewer, form: dict[str, list[str]]
    ) -> None:
        self.gate.sessions.logout(viewer.session_id)
        self.gate.signer.clear_cookie(req, resp, SESSION_COOKIE)
        log.info("dashboard_logout", key_id=viewer.principal.key_id)
        redirect(resp, "/dashboard/login?notice=signed-out")

    @action("read")
    def on_post_everywhere(
        self, req: falcon.Request, resp: falcon.Response, viewer: Viewer, form: dict[str, list[str]]
    ) -> None:
        ended = self.gate.sessions.sign_out_everywhere(viewer.principal.key_id)
        self.gate.signer.clear_cookie(req, resp, SESSION_COOKIE)
        log.info("dashboard_logout_everywhere", key_id=viewer.principal.key_id, sessions=ended)
        redirect(resp, "/dashboard/login?notice=signed-out-everywhere")


class Overview(Base):
    """GET /dashboard."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer) -> None:
        overview = self.read.overview(viewer.read_tenant, infrastructure=viewer.is_admin)
        trends = read_trends(self.read, viewer.read_tenant, window_of(req.get_param("window")))
        tenants = self.read.tenant_ids() if viewer.is_admin else []
        # The tenant in view's limits; across tenants (admin), the busiest tenants'.
        tenant = viewer.read_tenant
        limits = self.services.limits.report(tenant) if tenant is not None else None
        busiest = self.services.limits.busiest() if viewer.is_admin and tenant is None else []
        self.render(
            resp,
            "overview.html",
            viewer,
            nav="overview",
            overview=overview,
            tenants=tenants,
            limits=limits,
            busiest=busiest,
            trends=trends,
            windows=list(WINDOWS),
        )


class Functions(Base):
    """GET /dashboard/functions."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer) -> None:
        functions = self.read.functions(viewer.read_tenant)
        tenants = self.read.tenant_ids() if viewer.is_admin else []
        self.render(
            resp, "functions.html", viewer, nav="functions", functions=functions, tenants=tenants
        )


class Invocations(Base):
    """GET /dashboard/invocations?function=&status=&tenant=&from=&to=&cursor=."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer) -> None:
        where = _filter(req, viewer)
        listing = self.read.invocations(
            viewer.read_tenant, where, cursor=req.get_param("cursor"), limit=params.limit(req)
        )
        self.render(
            resp,
            "invocations.html",
            viewer,
            nav="invocations",
            page=listing,
            where=where,
            refresh=auto_refresh(req),
            raw_from=req.get_param("from") or "",
            raw_to=req.get_param("to") or "",
            functions=self.services.function_names,
            statuses=params.STATUSES,
            tenants=self.read.tenant_ids() if viewer.is_admin else [],
        )


class Failed(Base):
    """GET /dashboard/failed; POST /dashboard/failed/retry retries the selected ones."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer) -> None:
        function = req.get_param("function") or None
        where = InvocationFilter(function=function, status="failed", tenant=viewer.tenant_filter)
        listing = self.read.invocations(
            viewer.read_tenant, where, cursor=req.get_param("cursor"), limit=params.limit(req)
        )
        self.render(
            resp,
            "failed.html",
            viewer,
            nav="failed",
            page=listing,
            where=where,
            refresh=auto_refresh(req),
            notice=notice_of(req),
            functions=self.services.function_names,
            tenants=self.read.tenant_ids() if viewer.is_admin else [],
        )

    @action("manage")
    def on_post_retry(
        self, req: falcon.Request, resp: falcon.Response, viewer: Viewer, form: dict[str, list[str]]
    ) -> None:
        ids = form.get("id", [])
        if not ids:
            redirect(resp, "/dashboard/failed" + viewer.query(notice="nothing-selected"))
            return
        done = self.services.invocations.retry_failed(
            ids, acting_tenant(viewer), actor=actor_of(req, viewer)
        )
        retried, skipped = len(done.retried), len(done.skipped)
        log.info(
            "dashboard_bulk_retry", key_id=viewer.principal.key_id, retried=retried, skipped=skipped
        )
        redirect(
            resp,
            "/dashboard/failed" + viewer.query(notice="bulk", retried=retried, skipped=skipped),
        )


def actor_of(req: falcon.Request, viewer: Viewer) -> Actor:
    """Who acts, for the audit trail: the signed-in key, under the gateway's request id."""
    return Actor.of_key(viewer.principal, str(req.context.request_id))


def acting_tenant(viewer: Viewer) -> str | None:
    """The tenant an action on an invocation acts for.

    A tenant key acts for its own tenant (another tenant's invocation is not found); an
    admin key (None) acts for the invocation's tenant, as the API does with `X-Tenant-ID`.
    """
    return None if viewer.is_admin else viewer.principal.tenant_id


def _logged(viewer: Viewer, action: str, invocation_id: str, tenant_id: str) -> None:
    log.info(
        "dashboard_action",
        action=action,
        invocation_id=invocation_id,
        tenant_id=tenant_id,
        key_id=viewer.principal.key_id,
    )


class InvocationItem(Base):
    """GET /dashboard/invocations/{id}; POST .../retry and .../cancel."""

    @page
    def on_get(
        self, req: falcon.Request, resp: falcon.Response, viewer: Viewer, invocation_id: str
    ) -> None:
        detail = self.read.invocation(
            None if viewer.is_admin else viewer.principal.tenant_id,
            invocation_id,
            with_payload=viewer.sees_payloads,
            with_tracebacks=viewer.sees_tracebacks,
        )
        self.render(
            resp, "invocation.html", viewer, nav="invocations", detail=detail, notice=notice_of(req)
        )

    @action("manage")
    def on_post_retry(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        viewer: Viewer,
        form: dict[str, list[str]],
        invocation_id: str,
    ) -> None:
        done = self.services.invocations.retry(
            invocation_id, acting_tenant(viewer), actor=actor_of(req, viewer)
        )
        _logged(viewer, "retry", invocation_id, done.tenant_id)
        redirect(resp, invocation_path(invocation_id) + "?notice=retried")

    @action("manage")
    def on_post_cancel(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        viewer: Viewer,
        form: dict[str, list[str]],
        invocation_id: str,
    ) -> None:
        done = self.services.invocations.cancel(
            invocation_id, acting_tenant(viewer), actor=actor_of(req, viewer)
        )
        _logged(viewer, "cancel", invocation_id, done.tenant_id)
        redirect(resp, invocation_path(invocation_id) + "?notice=cancelled")


class Stylesheet:
    """GET /dashboard/static/dashboard.css (no session needed: it is only styles)."""

    public = True

    def __init__(self) -> None:
        self.css = (STATIC / "dashboard.css").read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/css; charset=utf-8"
        resp.data = self.css
        page_headers(resp)
        resp.cache_control = ["public", "max-age=3600"]
