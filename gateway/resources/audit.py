"""The audit trail: `GET /v1/audit`, newest first, in pages.

Needs `manage`: the trail names keys and people and shows what they did, which is for
those who may act (a `read` key is what dashboards and integrations are given). A tenant's
key sees its tenant's records; an operator key every tenant's, or one tenant's with
`X-Tenant-ID`.
"""

from __future__ import annotations

import falcon

from gateway import params, schemas
from gateway.hooks import require_scope
from gateway.middleware import caller_of
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.services.audit import AuditTrail


class AuditCollection:
    """GET /v1/audit?action=&target=&actor=&since=&until=&limit=&cursor=."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    @falcon.before(require_scope("manage"))
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        page = self.trail.list(
            caller_of(req).read_tenant_id,
            action=req.get_param("action"),
            target=req.get_param("target"),
            actor=req.get_param("actor"),
            since=params.rfc3339(req, "since"),
            until=params.rfc3339(req, "until"),
            limit=params.limit(req),
            cursor=params.cursor(req),
        )
        resp.media = schemas.AuditList(
            records=[schemas.AuditRecord.model_validate(v) for v in page.records],
            next_cursor=page.next_cursor,
        ).media()


def add_routes(app: WsgiApp, runtime: Runtime) -> None:
    app.add_route("/v1/audit", AuditCollection(runtime.audit))
