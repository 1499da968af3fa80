"""A tenant's limits, for operators: `GET` and `PUT /v1/tenants/{tenant_id}/limits`.

Operator keys (`admin`) only: a tenant's key is refused with 403, whatever tenant it
names. `PUT` replaces the tenant's own limits with the body: a limit it leaves out (or
sets to null) follows the deployment's default, so `PUT {}` resets them all. Bad values
are a 400 naming the limit; an unknown tenant a 404. See `runtime.services.limits`.
"""

from __future__ import annotations

import falcon

from gateway import schemas
from gateway.hooks import json_object_body, require_scope
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.services.limits import COLUMNS, LimitService, TenantLimitsReport


def _media(report: TenantLimitsReport) -> dict[str, object]:
    return schemas.TenantLimits.model_validate(report.as_dict()).media()


class TenantLimitsResource:
    """GET and PUT /v1/tenants/{tenant_id}/limits."""

    def __init__(self, limits: LimitService, max_body_bytes: int) -> None:
        self.limits = limits
        self.max_body_bytes = max_body_bytes

    @falcon.before(require_scope("admin"))
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        resp.media = _media(self.limits.report(tenant_id))

    @falcon.before(require_scope("admin"))
    @falcon.before(json_object_body)
    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        values = {**dict.fromkeys(COLUMNS), **req.context.payload}
        self.limits.set(tenant_id, values)
        resp.media = _media(self.limits.report(tenant_id))


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    app.add_route(
        "/v1/tenants/{tenant_id}/limits",
        TenantLimitsResource(runtime.limits, runtime.settings.max_body_bytes),
    )
