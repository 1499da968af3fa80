"""GET /dashboard/search?q=: find an invocation by its id or an idempotency key.

Matches are exact and read as the viewer reads everything: a tenant's key finds its own
tenant's invocations only; an operator key finds any (or the tenant it filters by). An id
that matches exactly one invocation goes straight to its page.
"""

from __future__ import annotations

import falcon

from gateway.dashboard.auth import Viewer, page, redirect
from gateway.dashboard.readmodel import InvocationPage, InvocationRow
from gateway.dashboard.resources import Base, invocation_path
from runtime.errors import BadRequest
from runtime.store.search import MAX_SEARCH_LENGTH


class Search(Base):
    """GET /dashboard/search?q=."""

    @page
    def on_get(self, req: falcon.Request, resp: falcon.Response, viewer: Viewer) -> None:
        text = (req.get_param("q") or "").strip()
        if len(text) > MAX_SEARCH_LENGTH:
            raise BadRequest(f"search for at most {MAX_SEARCH_LENGTH} characters")
        found = self.read.store.search.find(viewer.read_tenant, text) if text else []
        if len(found) == 1 and found[0].id == text:
            redirect(resp, invocation_path(text) + viewer.query())
            return
        self.render(
            resp,
            "search.html",
            viewer,
            nav="",
            search_text=text,
            page=InvocationPage([InvocationRow.from_view(v) for v in found], None),
        )
