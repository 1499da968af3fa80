"""Request-wide concerns: the request id, the caller (API key and tenant), the access log."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import falcon
import structlog

from gateway.errors import Problem
from runtime.services.audit import Actor
from runtime.services.tenants import Principal, TenantService

log = structlog.get_logger("ferry.gateway")

#: A client's X-Request-ID is kept if it is 1 to 200 printable ASCII characters.
VALID_REQUEST_ID = re.compile(r"[\x20-\x7e]{1,200}")


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who sent the request, and which tenant it acts for."""

    principal: Principal
    #: The tenant writes act for: a tenant key's own, or `X-Tenant-ID` for an operator key
    #: (None when an operator key named no tenant: it may read across tenants, not write).
    acting_tenant_id: str | None
    #: The tenant reads are limited to; None for an operator key reading across all tenants.
    read_tenant_id: str | None

    @property
    def tenant_id(self) -> str:
        """The tenant a write acts for; 403 for an operator key that named none."""
        if self.acting_tenant_id is None:
            raise Problem(
                403,
                kind="tenant-required",
                title="An operator key acts for a tenant only when it names one.",
                detail="send X-Tenant-ID with the tenant this operator key acts for",
            )
        return self.acting_tenant_id


def caller_of(req: falcon.Request) -> Caller:
    """The authenticated caller; only routes that are not public have one."""
    caller = req.context.get("caller")
    if not isinstance(caller, Caller):
        raise RuntimeError("no caller on a route that needs one; is AuthMiddleware installed?")
    return caller


def request_id_of(req: falcon.Request) -> str:
    return str(req.context.request_id)


def actor_of(req: falcon.Request) -> Actor:
    """Who acts in this request, for the audit trail: the caller's key and the request id."""
    return Actor.of_key(caller_of(req).principal, request_id_of(req))


class RequestIdMiddleware:
    """Give every request an id: the client's valid `X-Request-ID`, else a new uuid4 hex.

    The id is bound to the log context for the request and written on every response,
    errors included.
    """

    def __init__(self, new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.new_id = new_id

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-ID")
        request_id = given if given and VALID_REQUEST_ID.fullmatch(given) else self.new_id()
        req.context.request_id = request_id
        req.context.request_id_tokens = structlog.contextvars.bind_contextvars(
            request_id=request_id
        )

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        resp.set_header("X-Request-ID", request_id_of(req))
        structlog.contextvars.reset_contextvars(**req.context.request_id_tokens)


class AccessLogMiddleware:
    """One log line per request; never the body, never the Authorization header."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started_at = self.clock()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        caller = req.context.get("caller")
        log.info(
            "http_request",
            method=req.method,
            route=req.uri_template or "unmatched",
            status=resp.status_code,
            duration_ms=round((self.clock() - req.context.started_at) * 1000, 1),
            request_id=request_id_of(req),
            tenant_id=caller.acting_tenant_id if isinstance(caller, Caller) else None,
        )


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _unauthenticated(detail: str) -> Problem:
    return Problem(
        401,
        kind="unauthenticated",
        title="An API key is needed.",
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer realm="ferry"'},
    )


class AuthMiddleware:
    """Resolve `Authorization: Bearer <key>` into a `Caller` for every non-public route.

    Scopes are checked per route (`gateway.hooks.require_scope`). A suspended tenant's
    key is refused here, whatever the route (403 `tenant-suspended`). A tenant's key acts
    for its own tenant alone: naming another in `X-Tenant-ID` is 403, so a client never
    believes it acted for a tenant it did not. An operator key acts for the tenant
    `X-Tenant-ID` names, or reads across every tenant without it.
    """

    def __init__(self, tenants: TenantService) -> None:
        self.tenants = tenants

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        # No resource: Falcon answers 404 itself; public resources need no key.
        if resource is None or getattr(resource, "public", False):
            return
        token = _bearer_token(req.get_header("Authorization"))
        if token is None:
            raise _unauthenticated("send the API key as 'Authorization: Bearer <key>'")
        # An invoke's INSERT checks the key and its tenant again (`runtime.keycache`).
        checked = getattr(resource, "key_checked_by_write", {}).get(req.method)
        # A suspended tenant's key raises TenantSuspended: 403.
        principal = self.tenants.authenticate(token, checked_by_write=checked)
        if principal is None:
            raise _unauthenticated("the API key is unknown, revoked or expired")
        caller = self._caller(principal, req.get_header("X-Tenant-ID"))
        req.context.caller = caller
        req.context.tenant_tokens = structlog.contextvars.bind_contextvars(
            tenant_id=caller.acting_tenant_id
        )

    def _caller(self, principal: Principal, tenant_header: str | None) -> Caller:
        if principal.tenant_id is not None:
            if tenant_header and tenant_header != principal.tenant_id:
                raise Problem(
                    403,
                    kind="tenant-forbidden",
                    title="The API key cannot act for another tenant.",
                    detail="X-Tenant-ID names another tenant; a tenant's key acts for its own alone",
                )
            return Caller(principal, principal.tenant_id, read_tenant_id=principal.tenant_id)
        if not tenant_header:
            return Caller(principal, acting_tenant_id=None, read_tenant_id=None)
        self.tenants.get(tenant_header)  # TenantNotFound answers 404
        return Caller(principal, acting_tenant_id=tenant_header, read_tenant_id=tenant_header)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        tokens = req.context.get("tenant_tokens")
        if tokens:
            structlog.contextvars.reset_contextvars(**tokens)
