"""The web dashboard at `/dashboard`: server-rendered pages over a narrow read model.

Pages read through `readmodel.DashboardReadModel` (dataclasses, never queries in
templates), render Jinja2 templates with autoescaping on, and need no JavaScript.
Sign-in, sessions and CSRF are in `sessions` and `auth`.
"""

from __future__ import annotations

from gateway.dashboard import (
    audit_pages,
    invoke_pages,
    resources,
    schedule_pages,
    search_pages,
)
from gateway.dashboard.auth import Gate
from gateway.dashboard.error_pages import install_error_pages
from gateway.dashboard.readmodel import DashboardReadModel
from gateway.dashboard.rendering import Renderer
from gateway.dashboard.sessions import SessionOptions, SessionSigner
from gateway.types import WsgiApp
from runtime.app import Runtime
from runtime.recovery.heartbeat import HeartbeatOptions
from runtime.services.sessions import SessionService


def add_dashboard_routes(app: WsgiApp, runtime: Runtime) -> None:
    """Mount the dashboard's pages, actions and stylesheet on `app`."""
    settings = runtime.settings
    read = DashboardReadModel(
        runtime.store,
        runtime.registry,
        runtime.broker,
        HeartbeatOptions.from_settings(settings),
        runtime.schedules,
    )
    signer = SessionSigner(settings.secret_key, SessionOptions.from_settings(settings))
    sessions = SessionService(runtime.store, max_age_s=settings.dashboard_session_max_age_s)
    renderer = Renderer()
    gate = Gate(read, signer, sessions, renderer)
    services = resources.Services(
        invocations=runtime.invocations,
        tenants=runtime.tenants,
        schedules=runtime.schedules,
        audit=runtime.audit,
        limits=runtime.limits,
        function_names=tuple(f.name for f in runtime.registry),
    )
    item = resources.InvocationItem(gate, services)
    failed = resources.Failed(gate, services)
    app.add_route("/dashboard", resources.Overview(gate, services))
    app.add_route("/dashboard/login", resources.Login(gate, services))
    logout = resources.Logout(gate, services)
    app.add_route("/dashboard/logout", logout)
    app.add_route("/dashboard/logout/everywhere", logout, suffix="everywhere")
    app.add_route("/dashboard/functions", resources.Functions(gate, services))
    app.add_route("/dashboard/functions/{name}/invoke", invoke_pages.InvokeForm(gate, services))
    app.add_route("/dashboard/invocations", resources.Invocations(gate, services))
    app.add_route("/dashboard/invocations/{invocation_id}", item)
    app.add_route("/dashboard/invocations/{invocation_id}/retry", item, suffix="retry")
    app.add_route("/dashboard/invocations/{invocation_id}/cancel", item, suffix="cancel")
    app.add_route("/dashboard/failed", failed)
    app.add_route("/dashboard/failed/retry", failed, suffix="retry")
    schedule = schedule_pages.ScheduleItem(gate, services)
    app.add_route("/dashboard/schedules", schedule_pages.Schedules(gate, services))
    app.add_route("/dashboard/schedules/{schedule_id}", schedule)
    for action in ("pause", "resume", "trigger"):
        app.add_route(f"/dashboard/schedules/{{schedule_id}}/{action}", schedule, suffix=action)
    app.add_route("/dashboard/audit", audit_pages.Audit(gate, services))
    app.add_route("/dashboard/search", search_pages.Search(gate, services))
    app.add_route("/dashboard/static/dashboard.css", resources.Stylesheet())
    # Falcon's own errors (no such page, a method a page lacks) as pages, not problem+json.
    install_error_pages(app, renderer)


__all__ = ["add_dashboard_routes"]
