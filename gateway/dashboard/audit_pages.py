"""The dashboard's audit page: the trail of manage and admin actions, newest first.

Like `GET /v1/audit`, it needs `manage`: a tenant's key sees its tenant's records, an
operator key every tenant's or the tenant it filters by.
"""

from __future__ import annotations

import falcon

from gateway import params
from gateway.dashboard.auth import Forbidden, Viewer, page
from gateway.dashboard.resources import Base
from runtime.errors import BadRequest

#: Longest filter text the page takes (the columns hold at most 255 characters).
MAX_FILTER_CHARS = 255


def _text(req: falcon.Request, name: str) -> str | None:
    value = (req.get_param(name) or "").strip() or None
    if value is not None and len(value) > MAX_FILTER_CHARS:
        raise BadRequest(f"{name} is at most {MAX_FILTER_CHARS} characters")
    return value


class Audit(Base):
    """GET /dashboard/audit?action=&target=&actor=&cursor= (and an operator's tenant)."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer) -> None:
        if not viewer.can_manage:
            raise Forbidden("The audit trail needs an API key with the 'manage' scope.")
        where = {name: _text(req, name) for name in ("action", "target", "actor")}
        listing = self.services.audit.list(
            viewer.read_tenant,
            action=where["action"],
            target=where["target"],
            actor=where["actor"],
            limit=params.limit(req),
            cursor=params.cursor(req),
        )
        self.render(
            resp,
            "audit.html",
            viewer,
            nav="audit",
            records=listing.records,
            next_cursor=listing.next_cursor,
            where=where,
            tenants=self.read.tenant_ids() if viewer.is_admin else [],
        )
