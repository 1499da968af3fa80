"""The overview's charts: throughput, failures, p95 run time and backlog over a window.

The figures are the store's (`runtime.store.timeseries`); this module picks the window
and its buckets and turns the figures into server-drawn SVG (`charts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

from markupsafe import Markup

from gateway.dashboard import charts
from gateway.dashboard.readmodel import DashboardReadModel
from gateway.dashboard.rendering import millis
from runtime.errors import BadRequest
from runtime.store.timeseries import Bucket, aligned_window

#: The windows a viewer may pick: how far back, and in how many buckets.
WINDOWS: dict[str, tuple[timedelta, int]] = {
    "hour": (timedelta(hours=1), 12),
    "day": (timedelta(days=1), 24),
}
DEFAULT_WINDOW = "hour"


@dataclasses.dataclass(frozen=True)
class Trends:
    window: str
    buckets: list[Bucket]

    def slots(self, fmt: Callable[[float], str] = lambda v: f"{v:g}") -> charts.Slots:
        """Each bucket's start under it; in its tooltips, the bucket exactly (UTC)."""
        return charts.Slots(
            labels=[f"{b.start:%H:%M}" for b in self.buckets],
            titles=[f"{b.start:%Y-%m-%d %H:%M} to {b.end:%H:%M} UTC" for b in self.buckets],
            fmt=fmt,
        )

    def throughput_chart(self) -> Markup:
        return charts.stacked_bars(
            f"Finished invocations per {self.step_label}, last {self.window}",
            [
                charts.Series("succeeded", "ok", [b.succeeded for b in self.buckets]),
                charts.Series("failed", "bad", [b.failed for b in self.buckets]),
            ],
            self.slots(),
        )

    def p95_chart(self) -> Markup:
        return charts.line(
            f"p95 attempt run time, last {self.window}",
            charts.Series("p95", "info", [b.p95_ms for b in self.buckets]),
            self.slots(millis),
        )

    def waiting_chart(self) -> Markup:
        return charts.stacked_bars(
            f"Invocations waiting to start, last {self.window}",
            [charts.Series("waiting", "warn", [b.waiting for b in self.buckets])],
            self.slots(),
        )

    @property
    def step_label(self) -> str:
        span, count = WINDOWS[self.window]
        minutes = span.total_seconds() / 60 / count
        return f"{minutes:.0f} min" if minutes < 60 else f"{minutes / 60:.0f} h"


def window_of(value: str | None) -> str:
    """The window a request names (`?window=`), or the default; anything else is 400."""
    if not value:
        return DEFAULT_WINDOW
    if value not in WINDOWS:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}")
    return value


def read_trends(read: DashboardReadModel, read_tenant: str | None, window: str) -> Trends:
    span, count = WINDOWS[window]
    start, end = aligned_window(read.clock(), span, count)
    return Trends(window, read.store.timeseries.buckets(read_tenant, start, end, count))
