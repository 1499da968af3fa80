"""Who is looking at the dashboard, and the checks every page and action runs first.

A page answers a visitor without a valid session with a redirect to the login form; an
action (POST) additionally needs the session's CSRF token, or it is refused with 403
before anything happens. What a signed-in key may see and do is decided exactly as the
API decides it (`gateway.middleware.Caller`, `Principal.has`): `read` to view, `manage`
to retry or cancel; an operator key (`admin`, no tenant) sees every tenant and filters by
one. A suspended tenant's key is refused on its next page (`TenantSuspended`, 403).

A session is the signed cookie (`sessions.SessionSigner`) *and* its live server-side
record (`runtime.services.sessions.SessionService`): signing out, signing out everywhere
or a refused key ends the record, and the cookie alone then opens nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import falcon
import structlog

from gateway.dashboard.readmodel import DashboardReadModel
from gateway.dashboard.rendering import Renderer, page_headers
from gateway.dashboard.sessions import SESSION_COOKIE, SessionSigner
from gateway.middleware import Caller
from runtime.errors import (
    BadRequest,
    FerryError,
    InvalidState,
    NotFound,
    TenantSuspended,
    Unavailable,
)
from runtime.services.sessions import SessionService
from runtime.store.tenants import TENANT_ID, Principal

log = structlog.get_logger("ferry.dashboard")

LOGIN = "/dashboard/login"
#: Largest form body an action accepts (a bulk retry of 200 ids fits many times over).
MAX_FORM_BYTES = 64 * 1024
_NEXT = re.compile(r"/dashboard(?:[/?][A-Za-z0-9/_.~%&=+:?-]*)?")


@dataclasses.dataclass(frozen=True)
class Viewer:
    """The signed-in key, what it reads, and its session's CSRF token."""

    principal: Principal
    caller: Caller
    #: The session's opaque id (what the cookie carries); it is never rendered.
    session_id: str
    csrf_token: str
    #: The tenant an operator key chose to look at (None: all tenants).
    tenant_filter: str | None

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin

    @property
    def can_manage(self) -> bool:
        return self.principal.has("manage")

    @property
    def sees_payloads(self) -> bool:
        return self.principal.has("manage")

    @property
    def sees_tracebacks(self) -> bool:
        """Tracebacks name server files and code: `manage` and `admin` keys only."""
        return self.principal.has("manage")

    @property
    def read_tenant(self) -> str | None:
        return self.caller.read_tenant_id

    def query(self, **params: Any) -> str:
        """A query string keeping the admin's tenant filter, plus `params`."""
        values = {"tenant": self.tenant_filter, **params}
        kept = {k: v for k, v in values.items() if v not in (None, "")}
        return ("?" + urllib.parse.urlencode(kept)) if kept else ""


def safe_next(value: str | None) -> str:
    """Where to go after login: a dashboard path of ours, never another site."""
    if value and _NEXT.fullmatch(value) and "//" not in value and ".." not in value:
        return value
    return "/dashboard"


def redirect(resp: falcon.Response, location: str) -> None:
    resp.status = falcon.HTTP_303
    resp.location = location
    page_headers(resp)


class Gate:
    """Sessions to viewers; shared by every dashboard resource."""

    def __init__(
        self,
        read: DashboardReadModel,
        signer: SessionSigner,
        sessions: SessionService,
        renderer: Renderer,
    ) -> None:
        self.read = read
        self.signer = signer
        self.sessions = sessions
        self.renderer = renderer

    def viewer(self, req: falcon.Request, resp: falcon.Response) -> Viewer | None:
        """The signed-in viewer, or None (and the stale cookie cleared).

        The cookie must be ours and its session live, with a key that still authenticates
        and has `read`; a suspended tenant's key raises `TenantSuspended`.
        """
        cookie = req.cookies.get(SESSION_COOKIE)
        session_id = self.signer.read(cookie)
        signed_in = self.sessions.check(session_id) if session_id is not None else None
        if signed_in is None:
            if cookie:
                self.signer.clear_cookie(req, resp, SESSION_COOKIE)
            return None
        principal = signed_in.principal
        tenant_filter = self._tenant_filter(req, principal)
        # An operator key (no tenant) acts for the tenant it filters by, if any.
        tenant = principal.tenant_id if principal.tenant_id is not None else tenant_filter
        caller = Caller(principal, acting_tenant_id=tenant, read_tenant_id=tenant)
        # The access log names the tenant, as it does for API requests.
        req.context.caller = caller
        return Viewer(
            principal,
            caller,
            signed_in.session_id,
            self.signer.csrf_token(signed_in.session_id),
            tenant_filter,
        )

    def _tenant_filter(self, req: falcon.Request, principal: Principal) -> str | None:
        tenant = req.get_param("tenant") or None
        if tenant is None:
            return None
        if not TENANT_ID.fullmatch(tenant):
            raise BadRequest("tenant must be a tenant id")
        if not principal.is_operator and tenant != principal.tenant_id:
            # As the API answers X-Tenant-ID from a tenant's key.
            raise Forbidden("only an operator key may look at another tenant")
        return tenant if principal.is_operator else None

    def error_page(
        self, resp: falcon.Response, status: int, message: str, viewer: Viewer | None
    ) -> None:
        self.renderer.render(
            resp, "error.html", status=status, message=message, viewer=viewer, nav=""
        )


class Forbidden(FerryError):
    """The dashboard refuses this."""


Responder = Callable[..., None]
_STATUS_OF = (
    (NotFound, 404),
    (BadRequest, 400),
    (InvalidState, 409),
    (TenantSuspended, 403),
    (Forbidden, 403),
)


def _answer_error(gate: Gate, resp: falcon.Response, ex: FerryError, viewer: Viewer | None) -> None:
    if isinstance(ex, Unavailable):
        gate.error_page(
            resp, 503, "The store or the broker is not answering; try again shortly.", viewer
        )
        resp.set_header("Retry-After", "5")
        return
    for family, status in _STATUS_OF:
        if isinstance(ex, family):
            gate.error_page(resp, status, ex.message, viewer)
            return
    raise ex


def page(responder: Responder) -> Responder:
    """A GET page: signed in with `read`, or sent to the login form; errors as HTML."""

    @functools.wraps(responder)
    def run(self: Any, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        gate: Gate = self.gate
        viewer = None
        try:
            viewer = gate.viewer(req, resp)
            if viewer is None:
                redirect(resp, f"{LOGIN}?{urllib.parse.urlencode({'next': req.relative_uri})}")
                return
            responder(self, req, resp, viewer, **params)
        except FerryError as ex:
            _answer_error(gate, resp, ex, viewer)

    return run


def action(scope: str) -> Callable[[Responder], Responder]:
    """A POST action: signed in, the session's CSRF token, and `scope`; else refused."""

    def decorate(responder: Responder) -> Responder:
        @functools.wraps(responder)
        def run(self: Any, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
            gate: Gate = self.gate
            viewer = None
            try:
                viewer = gate.viewer(req, resp)
                if viewer is None:
                    redirect(resp, LOGIN)
                    return
                form = read_form(req)
                if not gate.signer.csrf_valid(viewer.session_id, first(form, "csrf_token")):
                    log.warning(
                        "dashboard_csrf_refused", path=req.path, key_id=viewer.principal.key_id
                    )
                    gate.error_page(
                        resp,
                        403,
                        "This form has expired or did not come from the dashboard; reload the page and try again.",
                        viewer,
                    )
                    return
                if not viewer.principal.has(scope):
                    gate.error_page(
                        resp, 403, f"This needs an API key with the {scope!r} scope.", viewer
                    )
                    return
                responder(self, req, resp, viewer, form, **params)
            except FerryError as ex:
                _answer_error(gate, resp, ex, viewer)

        return run

    return decorate


def read_form(req: falcon.Request) -> dict[str, list[str]]:
    """An `application/x-www-form-urlencoded` body, bounded in size."""
    media_type = (req.content_type or "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise BadRequest("the dashboard's forms send application/x-www-form-urlencoded")
    if req.content_length is not None and req.content_length > MAX_FORM_BYTES:
        raise BadRequest("the form is too large")
    raw = req.bounded_stream.read(MAX_FORM_BYTES + 1)
    if len(raw) > MAX_FORM_BYTES:
        raise BadRequest("the form is too large")
    try:
        return urllib.parse.parse_qs(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False
        )
    except (UnicodeDecodeError, ValueError) as ex:
        raise BadRequest("the form could not be read") from ex


def first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None
