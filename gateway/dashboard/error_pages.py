"""HTML error pages for everything under `/dashboard` that no page answers itself.

A dashboard page turns Ferry's errors into the error page (`auth.page`); what Falcon
answers on its own (no such page: 404, a method the page lacks: 405) and an unexpected
failure (500) would otherwise be the API's problem+json. A person at a browser gets the
same HTML page with the same strict headers; every other path keeps problem+json.
"""

from __future__ import annotations

import falcon

from gateway.dashboard.rendering import Renderer
from gateway.errors import problem_document, serialize_problem
from gateway.types import WsgiApp

PREFIX = "/dashboard"


def is_dashboard_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def install_error_pages(app: WsgiApp, renderer: Renderer) -> None:
    """Serialise errors of dashboard paths as HTML pages, all others as problem+json."""

    def serialize(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
        if not is_dashboard_path(req.path):
            serialize_problem(req, resp, error)
            return
        problem = problem_document(req, error)
        # No session is read here: the page must render even when the store is down.
        renderer.render(
            resp,
            "error.html",
            status=error.status_code,
            message=problem.detail,
            title=problem.title,
            viewer=None,
            nav="",
        )

    app.set_error_serializer(serialize)
