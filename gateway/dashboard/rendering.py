"""Jinja2 templates of the dashboard (autoescaped), their filters, and the page headers."""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import falcon
import jinja2
from markupsafe import Markup, escape

from gateway.dashboard.docs import render_markdown
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


def millis(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


#: How many characters of an id a listing shows (the full id is in its title and link).
SHORT_ID = 8
#: Seconds between reloads of a list with auto-refresh on.
REFRESH_S = 15


def _relative(seconds: float) -> str:
    if seconds < 0:
        return "in " + _ago(-seconds).removesuffix(" ago")
    return "just now" if seconds < 5 else _ago(seconds)


def when(value: datetime | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Markup:
    """A time as "3 min ago", the exact time (RFC 3339, UTC) in its title and `datetime`."""
    if value is None:
        return Markup("—")
    exact = escape(rfc3339(value))
    relative = _relative((now() - value).total_seconds())
    return Markup(f'<time datetime="{exact}" title="{exact}">{escape(relative)}</time>')


def short_id(value: str) -> Markup:
    """An invocation id as its first characters, linking to its page, the full id on hover."""
    href = "/dashboard/invocations/" + urllib.parse.quote(value, safe="")
    return Markup(
        f'<a href="{escape(href)}" title="{escape(value)}"><code>{escape(value[:SHORT_ID])}</code></a>'
    )


@dataclasses.dataclass(frozen=True)
class RefreshToggle:
    """Whether a list reloads itself (a `<meta http-equiv=refresh>`, no script) and the
    link that flips it, keeping the rest of the page's query."""

    on: bool
    link: str


def auto_refresh(req: falcon.Request) -> RefreshToggle:
    on = req.get_param("refresh") == "on"
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(req.query_string) if k != "refresh"]
    if not on:
        kept.append(("refresh", "on"))
    query = urllib.parse.urlencode(kept)
    return RefreshToggle(on, req.path + ("?" + query if query else ""))


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
        ts=_timestamp,
        ago=_ago,
        age=_age,
        pct=_percent,
        ms=millis,
        json=pretty_json,
        when=when,
        short_id=short_id,
        markdown=render_markdown,
    )
    # Why a due invocation waits, in words (`runtime.store.limits.WAITING_REASONS`).
    env.filters["waiting_reason"] = lambda code: WAITING_REASONS.get(code, code)
    env.globals["REFRESH_S"] = REFRESH_S
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
