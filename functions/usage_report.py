"""Report a tenant's usage per function as CSV: counts, success rate, durations, attempts.

Input: `since` and `until` (RFC 3339 times; a time without an offset is read as UTC).
The report covers invocations created in `[since, until)`. `until` defaults to the
moment this invocation was accepted, so a retried report covers the same period;
`since` defaults to 30 days before `until`.

Output: `csv`, the report with a header row and one row per function, by name;
`rows`, how many functions it lists; and `period`, the `since` and `until` it covers.

Columns:

- `function`; `invocations`, all of them in the period;
- one count per status: `scheduled`, `queued`, `running`, `retrying`, `succeeded`,
  `failed`, `cancelled`;
- `success_rate`: succeeded / (succeeded + failed), four decimals; empty when none has
  finished yet. Cancelled invocations never ran and do not count against it;
- `p50_ms`, `p95_ms`: duration percentiles (linear interpolation, like PostgreSQL's
  `percentile_cont`) over the invocations that succeeded or failed, the duration being
  the `duration_ms` the API shows; empty when there are none;
- `attempts`: attempts started, retries included.

Only the calling tenant's invocations are read: the query goes through the function's
session, which is scoped to its tenant (on PostgreSQL by the database's row-level
security, on SQLite by the ORM guard, which covers this ORM query; docs/tenancy.md).
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator, model_validator

from runtime import Context, Permanent, function
from runtime.quantiles import percentile
from runtime.store.models import Invocation, Status

DEFAULT_PERIOD = timedelta(days=30)
STATUSES = tuple(s.value for s in Status)
COLUMNS = (
    "function",
    "invocations",
    *STATUSES,
    "success_rate",
    "p50_ms",
    "p95_ms",
    "attempts",
)
#: Rows fetched from the store per round trip; bounds memory on large tenants.
FETCH_BATCH = 2000


class Input(BaseModel):
    since: datetime | None = Field(
        default=None,
        description="Start of the period (inclusive); default: 30 days before `until`.",
    )
    until: datetime | None = Field(
        default=None, description="End of the period (exclusive); default: when accepted."
    )

    @field_validator("since", "until")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> Input:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        return self


class Period(BaseModel):
    since: datetime
    until: datetime


class Output(BaseModel):
    csv: str = Field(description="The report: a header row, then one row per function.")
    rows: int = Field(description="How many functions the report lists.")
    period: Period


@dataclass
class FunctionUsage:
    """What the report says about one function, gathered row by row."""

    name: str
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    attempts: int = 0
    #: A packed array of doubles: 8 bytes per invocation, for tenants with millions.
    durations_ms: array[float] = field(default_factory=lambda: array("d"))

    @property
    def invocations(self) -> int:
        return sum(self.by_status.values())

    @property
    def success_rate(self) -> float | None:
        finished = self.by_status[Status.SUCCEEDED] + self.by_status[Status.FAILED]
        return self.by_status[Status.SUCCEEDED] / finished if finished else None

    def as_row(self) -> list[str]:
        durations = sorted(self.durations_ms)
        return [
            self.name,
            str(self.invocations),
            *(str(self.by_status[s]) for s in STATUSES),
            _fmt(self.success_rate, 4),
            _fmt(percentile(durations, 0.50), 1),
            _fmt(percentile(durations, 0.95), 1),
            str(self.attempts),
        ]


def summarise(
    rows: Iterable[tuple[str, str, int, datetime | None, datetime | None]],
) -> list[FunctionUsage]:
    """Fold `(function, status, attempts, started_at, finished_at)` rows into usage."""
    usage: dict[str, FunctionUsage] = {}
    for name, status, attempts, started_at, finished_at in rows:
        entry = usage.get(name)
        if entry is None:
            entry = usage[name] = FunctionUsage(name)
        entry.by_status[status] = entry.by_status.get(status, 0) + 1
        entry.attempts += attempts
        ran = status in (Status.SUCCEEDED, Status.FAILED)
        if ran and started_at is not None and finished_at is not None:
            # Whole milliseconds, as the API's duration_ms.
            entry.durations_ms.append(float(int((finished_at - started_at).total_seconds() * 1000)))
    return [usage[name] for name in sorted(usage)]


def render_csv(usage: Sequence[FunctionUsage]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(entry.as_row() for entry in usage)
    return buffer.getvalue()


@function(queue="heavy", max_retries=3, timeout=300)
def usage_report(ctx: Context, payload: Input) -> Output:
    until = payload.until or ctx.accepted_at
    since = payload.since or until - DEFAULT_PERIOD
    if since >= until:  # a `since` after the default `until`
        raise Permanent(
            f"since ({since.isoformat()}) must be earlier than until ({until.isoformat()})"
        )
    # No tenant filter here on purpose: ctx.session scopes this ORM query to the tenant on
    # both backends (a raw SQL query would be scoped on PostgreSQL only; docs/tenancy.md).
    query = (
        sa.select(
            Invocation.function,
            Invocation.status,
            Invocation.attempts,
            Invocation.started_at,
            Invocation.finished_at,
        )
        .where(Invocation.created_at >= since, Invocation.created_at < until)
        .execution_options(yield_per=FETCH_BATCH)
    )
    usage = summarise(ctx.session.execute(query))
    ctx.log.info("usage_report_built", functions=len(usage))
    return Output(csv=render_csv(usage), rows=len(usage), period=Period(since=since, until=until))


def _fmt(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"
