"""Charts as inline SVG, drawn on the server: no script, no inline style, so the strict CSP holds.

A chart is a row of slots (one per time bucket) with one or more stacked series of bars,
or a line with gaps where a slot has no value. Colours come from classes in the
stylesheet (`svg.chart .<class>`); every bar and point carries a `<title>`, which the
browser shows on hover and a screen reader reads. Every text put in the SVG is escaped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 420
HEIGHT = 160
LEFT = 50  # room for the y axis' labels
RIGHT = 8
TOP = 10
BOTTOM = 22  # room for the time labels
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM


@dataclasses.dataclass(frozen=True)
class Series:
    """One named series: a value (or None: nothing known) per slot, drawn with `css_class`."""

    name: str
    css_class: str
    values: Sequence[float | None]


def _plain(value: float) -> str:
    return f"{value:g}"


@dataclasses.dataclass(frozen=True)
class Slots:
    """A chart's time axis: a short label under each slot, the exact name of each in its
    tooltips (the labels, if none), and how a value reads."""

    labels: Sequence[str]
    titles: Sequence[str] | None = None
    fmt: Callable[[float], str] = _plain

    def tip(self, k: int, value: float, series: Series) -> str:
        """The `<title>` of slot `k`'s mark of `series`: shown on hover, read aloud."""
        name = (self.titles or self.labels)[k]
        return f"<title>{escape(name)}: {escape(self.fmt(value))} {escape(series.name)}</title>"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # not reached: 10 * power is always at or above value


def _n(value: float) -> str:
    """A coordinate, short: two decimals at most."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _frame(
    label: str, top_label: str, slot_labels: Sequence[str], body: list[str], css_class: str
) -> Markup:
    ticks = []
    count = len(slot_labels)
    # First, middle and last slot: enough to read the time axis, never crowded.
    for k in sorted({0, count // 2, count - 1}):
        x = LEFT + PLOT_W * (k + 0.5) / count
        ticks.append(
            f'<text class="tick" x="{_n(x)}" y="{HEIGHT - 6}" text-anchor="middle">'
            f"{escape(slot_labels[k])}</text>"
        )
    parts = [
        f'<svg class="chart {escape(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{WIDTH - RIGHT}" y2="{TOP + PLOT_H}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{escape(top_label)}</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + PLOT_H}" text-anchor="end">0</text>',
        *body,
        *ticks,
        "</svg>",
    ]
    return Markup("".join(parts))


def stacked_bars(label: str, series: Sequence[Series], slots: Slots) -> Markup:
    """Bars per slot, the series stacked bottom to top in the order given."""
    count = len(slots.labels)
    totals = [sum(s.values[k] or 0 for s in series) for k in range(count)]
    top = nice_ceiling(max(totals, default=0))
    slot_w = PLOT_W / count
    bar_w = max(1.0, slot_w * 0.8)
    body = []
    for k in range(count):
        base = 0.0
        x = LEFT + slot_w * k + (slot_w - bar_w) / 2
        for s in series:
            value = s.values[k] or 0
            if value <= 0:
                continue
            height = PLOT_H * value / top
            y = TOP + PLOT_H * (1 - (base + value) / top)
            body.append(
                f'<rect class="{escape(s.css_class)}" x="{_n(x)}" y="{_n(y)}" '
                f'width="{_n(bar_w)}" height="{_n(height)}">{slots.tip(k, value, s)}</rect>'
            )
            base += value
    return _frame(label, slots.fmt(top), slots.labels, body, "bars")


def line(label: str, series: Series, slots: Slots) -> Markup:
    """A line through the slots' values; a slot without a value breaks it."""
    count = len(slots.labels)
    known = [v for v in series.values if v is not None]
    top = nice_ceiling(max(known, default=0))
    slot_w = PLOT_W / count
    path: list[str] = []
    points = []
    pen_down = False
    for k, value in enumerate(series.values):
        if value is None:
            pen_down = False
            continue
        x = LEFT + slot_w * (k + 0.5)
        y = TOP + PLOT_H * (1 - value / top)
        path.append(f"{'L' if pen_down else 'M'}{_n(x)} {_n(y)}")
        pen_down = True
        points.append(
            f'<circle class="{escape(series.css_class)}" cx="{_n(x)}" cy="{_n(y)}" r="3">'
            f"{slots.tip(k, value, series)}</circle>"
        )
    body = []
    if path:
        body.append(f'<path class="{escape(series.css_class)} stroke" d="{" ".join(path)}"/>')
    body.extend(points)
    return _frame(label, slots.fmt(top), slots.labels, body, "line")
