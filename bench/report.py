"""Percentiles, the printed table and the JSON file of a benchmark run."""

from __future__ import annotations

import dataclasses
import json
import operator
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
class Target:
    """Ferry's figure compared with `value`, or with `value` times another system's figure."""

    op: str
    value: float
    #: Another system of the same run (`SYSTEMS`) whose figure scales the bound; None: absolute.
    versus: str | None = None

    def bound(self, values: dict[str, float | None]) -> float | None:
        if self.versus is None:
            return self.value
        other = values.get(self.versus)
        return None if other is None else self.value * other

    def __str__(self) -> str:
        if self.versus is None:
            return f"{self.op} {self.value:g}"
        return f"{self.op} {self.value:g}x {self.versus.capitalize()}"


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    #: True when more is better (a rate); False for latencies.
    higher_is_better: bool
    #: Issue 15's targets for Ferry, all to be met; empty: none.
    targets: tuple[Target, ...] = ()


FIGURES = (
    Figure("accept_rate", "accept, closed loop", "/s", True, (Target(">=", 3000),)),
    Figure("accept_cpu_ms", "accept: gateway CPU per request", "ms", False, (Target("<=", 0.5),)),
    # The same closed loop against gunicorn + Falcon alone (bench/floor.py): the HTTP
    # stack's share of the two rows above.
    Figure("floor_accept_rate", "  floor: gunicorn + Falcon alone", "/s", True),
    Figure("floor_accept_cpu_ms", "  floor: its CPU per request", "ms", False),
    Figure("accept_p50_ms", "accept p50 at 200/s", "ms", False),
    Figure("accept_p99_ms", "accept p99 at 200/s", "ms", False, (Target("<", 5),)),
    Figure(
        "batch_accept_rate", "batch accept (1,000 per POST)", "/s", True, (Target(">=", 20000),)
    ),
    Figure("batch_accept_cpu_ms", "batch accept: gateway CPU per invocation", "ms", False),
    Figure(
        "e2e_rate",
        "end-to-end no-op drain",
        "/s",
        True,
        (Target(">=", 1, "celery"), Target(">=", 0.5, "dramatiq")),
    ),
    Figure("e2e_cpu_ms", "drain: workers' CPU per invocation", "ms", False, (Target("<=", 0.5),)),
    Figure("e2e_postgres_cpu_ms", "drain: PostgreSQL's CPU per invocation", "ms", False),
    Figure("idle_start_p50_ms", "idle: accepted -> started p50", "ms", False, (Target("<", 10),)),
    Figure("idle_start_p99_ms", "idle: accepted -> started p99", "ms", False, (Target("<", 50),)),
    Figure("idle_finish_p50_ms", "idle: accepted -> finished p50", "ms", False),
    Figure("idle_finish_p99_ms", "idle: accepted -> finished p99", "ms", False),
    # Fair dispatch (bench/fairness.py): accept, then drain, with FERRY_FAIR_DISPATCH on
    # and off. Fairness moves the broker send of a backlog from the accept into the drain,
    # so the cost is taken over both: count / (accept time + drain window).
    Figure("fair_on_1", "accept+drain, fairness on, 1 tenant", "/s", True),
    Figure("fair_off_1", "accept+drain, fairness off, 1 tenant", "/s", True),
    Figure("fair_cost_1", "fairness cost, 1 tenant", "%", False, (Target("<", 15),)),
    Figure("fair_drain_cost_1", "  of the drain alone, 1 tenant", "%", False),
    Figure("fair_on_10", "accept+drain, fairness on, 10 tenants", "/s", True),
    Figure("fair_off_10", "accept+drain, fairness off, 10 tenants", "/s", True),
    Figure("fair_cost_10", "fairness cost, 10 tenants", "%", False, (Target("<", 15),)),
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


_COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def meets(figure: Figure, values: dict[str, float | None]) -> str:
    """ "yes" if Ferry's value meets every target, "NO" if not, "" without targets or values."""
    value = values.get("ferry")
    if not figure.targets or value is None:
        return ""
    bounds = [(target, target.bound(values)) for target in figure.targets]
    if any(bound is None for _, bound in bounds):
        return ""  # a reference this run did not measure
    ok = all(_COMPARE[target.op](value, bound) for target, bound in bounds)
    return "yes" if ok else "NO"


def target_text(figure: Figure) -> str:
    return ", ".join(str(target) for target in figure.targets)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "ms" and abs(value) < 10:
        return f"{value:.2f}"
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
        by_system = {s: results.get(s, {}).get(figure.key) for s in SYSTEMS}
        values = list(by_system.values())
        r = ratio(values[0], values[1])
        rows.append(
            [
                figure.label,
                figure.unit,
                *(_fmt(v, figure.unit) for v in values),
                "-" if r is None else f"{r:.2f}x",
                target_text(figure),
                meets(figure, by_system),
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
            "target": target_text(figure) or None,
            # None: no target, or a value this run did not measure.
            "met": {"yes": True, "NO": False}.get(meets(figure, values)),
        }
    return {"figures": figures}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
