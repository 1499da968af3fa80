"""Percentiles, the printed table and the JSON file of a benchmark run."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime import quantiles

SYSTEMS = ("ferry", "dramatiq", "celery")
LABELS = {"ferry": "Ferry", "dramatiq": "raw Dramatiq", "celery": "Celery 5"}


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (whole percents, 0-100): Ferry's one definition."""
    return quantiles.percentile(values, p / 100)


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    #: True when more is better (a rate); False for latencies.
    higher_is_better: bool
    #: The issue's target for Ferry, as (comparison, value), or None.
    target: tuple[str, float] | None = None


FIGURES = (
    Figure("accept_rate", "accept, closed loop", "/s", True, (">=", 1200)),
    Figure("accept_p50_ms", "accept p50 at 200/s", "ms", False),
    Figure("accept_p99_ms", "accept p99 at 200/s", "ms", False, ("<", 20)),
    Figure("batch_accept_rate", "batch accept (1,000 per POST)", "/s", True, (">=", 20000)),
    Figure("batch_accept_cpu_ms", "batch accept: gateway CPU per invocation", "ms", False),
    Figure("e2e_rate", "end-to-end no-op drain", "/s", True, (">=", 1000)),
    Figure("idle_start_p50_ms", "idle: accepted -> started p50", "ms", False, ("<", 10)),
    Figure("idle_start_p99_ms", "idle: accepted -> started p99", "ms", False, ("<", 50)),
    Figure("idle_finish_p50_ms", "idle: accepted -> finished p50", "ms", False),
    Figure("idle_finish_p99_ms", "idle: accepted -> finished p99", "ms", False),
    # Fair dispatch (bench/fairness.py): accept, then drain, with FERRY_FAIR_DISPATCH on
    # and off. Fairness moves the broker send of a backlog from the accept into the drain,
    # so the cost is taken over both: count / (accept time + drain window).
    Figure("fair_on_1", "accept+drain, fairness on, 1 tenant", "/s", True),
    Figure("fair_off_1", "accept+drain, fairness off, 1 tenant", "/s", True),
    Figure("fair_cost_1", "fairness cost, 1 tenant", "%", False, ("<", 15)),
    Figure("fair_drain_cost_1", "  of the drain alone, 1 tenant", "%", False),
    Figure("fair_on_10", "accept+drain, fairness on, 10 tenants", "/s", True),
    Figure("fair_off_10", "accept+drain, fairness off, 10 tenants", "/s", True),
    Figure("fair_cost_10", "fairness cost, 10 tenants", "%", False, ("<", 15)),
    Figure("fair_drain_cost_10", "  of the drain alone, 10 tenants", "%", False),
)


NOTES = """\
accept: Ferry = HTTP POST through gunicorn, 202 only after the row is committed in
  PostgreSQL; raw Dramatiq and Celery = the producer's enqueue call (no store, no HTTP).
batch accept: Ferry only (invocations committed per second, POSTs of 1,000 inputs to
  /v1/functions/{name}/invocations/batch); the references have no comparable call ("-").
drain: no-ops already queued, timed from the first taken to the last finished.
idle: one at a time on idle workers; "finished" is the end of the task body for the
  references (they record nothing), the committed success row for Ferry."""


def meets(figure: Figure, value: float | None) -> str:
    if figure.target is None or value is None:
        return ""
    op, bound = figure.target
    ok = value >= bound if op == ">=" else value < bound
    return "yes" if ok else "NO"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def ratio(ferry: float | None, dramatiq: float | None) -> float | None:
    if ferry is None or not dramatiq:
        return None
    return ferry / dramatiq


def table(results: dict[str, dict[str, Any]]) -> str:
    """The figures of every system as a text table, with Ferry / raw Dramatiq and targets."""
    header = ["figure", "unit", *(LABELS[s] for s in SYSTEMS), "Ferry/Dramatiq", "target", "met"]
    rows = [header]
    for figure in FIGURES:
        values = [results.get(s, {}).get(figure.key) for s in SYSTEMS]
        r = ratio(values[0], values[1])
        target = f"{figure.target[0]} {figure.target[1]:g}" if figure.target else ""
        rows.append(
            [
                figure.label,
                figure.unit,
                *(_fmt(v, figure.unit) for v in values),
                "-" if r is None else f"{r:.2f}x",
                target,
                meets(figure, values[0]),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON document: figures per system, ratios, targets and whether each was met."""
    figures = {}
    for figure in FIGURES:
        values = {s: results.get(s, {}).get(figure.key) for s in SYSTEMS}
        figures[figure.key] = {
            "label": figure.label,
            "unit": figure.unit,
            **values,
            "ferry_over_dramatiq": ratio(values["ferry"], values["dramatiq"]),
            "target": None if figure.target is None else f"{figure.target[0]} {figure.target[1]:g}",
            "met": None if figure.target is None else meets(figure, values["ferry"]) == "yes",
        }
    return {"figures": figures}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
