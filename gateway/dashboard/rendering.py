"""Jinja2 templates of the dashboard (autoescaped), their filters, and the page headers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import falcon
import jinja2

from gateway.dashboard.readmodel import pretty_json
from runtime.services.limits import WAITING_REASONS
from runtime.store.views import rfc3339

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: No scripts at all; styles and forms only from this origin; never framed.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HTML = "text/html; charset=utf-8"


def _timestamp(value: datetime | None) -> str:
    return rfc3339(value) or "—"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _age(seconds: float | None) -> str:
    return "—" if seconds is None else _ago(seconds).removesuffix(" ago")


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _millis(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # Every value is escaped, whatever the template's extension.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ts=_timestamp, ago=_ago, age=_age, pct=_percent, ms=_millis, json=pretty_json
    )
    # Why a due invocation waits, in words (`runtime.store.limits.WAITING_REASONS`).
    env.filters["waiting_reason"] = lambda code: WAITING_REASONS.get(code, code)
    return env


class Renderer:
    def __init__(self, env: jinja2.Environment | None = None) -> None:
        self.env = env or environment()

    def render(
        self, resp: falcon.Response, template: str, *, status: int = 200, **context: Any
    ) -> None:
        resp.status = status
        resp.content_type = HTML
        resp.text = self.env.get_template(template).render(**context)
        page_headers(resp)


def page_headers(resp: falcon.Response) -> None:
    """Headers every dashboard answer carries: no caching, no framing, no scripts."""
    resp.set_header("Content-Security-Policy", CSP)
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.cache_control = ["no-store"]
