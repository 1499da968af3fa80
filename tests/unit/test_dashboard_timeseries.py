"""Figures over time (`runtime.store.timeseries`) on both backends, and the SVG charts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.dashboard import charts
from runtime.store import models
from runtime.store.timeseries import aligned_window, bucket_edges

START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def shaped(runtime: Any, tenant: str, **values: Any) -> str:
    """An invocation of `tenant`, then given exactly these times and status."""
    view, _ = runtime.invocations.accept(
        tenant_id=tenant, function="echo", payload={"message": "x"}
    )
    with runtime.store.db.session() as s:
        s.execute(
            sa.update(models.Invocation).where(models.Invocation.id == view.id).values(**values)
        )
    return view.id


def attempt(runtime: Any, invocation_id: str, tenant: str, started: datetime, ms: int) -> None:
    with runtime.store.db.session() as s:
        s.add(
            models.Attempt(
                invocation_id=invocation_id,
                tenant_id=tenant,
                number=1,
                started_at=started,
                finished_at=started + timedelta(milliseconds=ms),
                outcome="succeeded",
            )
        )


def test_finished_invocations_fall_in_the_bucket_of_their_finish(runtime, make_tenant):
    tenant = make_tenant()
    # Given invocations finished at known times: 2 succeeded and 1 failed in the first
    # 5 minutes, 1 succeeded in the last, and 1 before the window
    for minute, status in ((1, "succeeded"), (4.9, "succeeded"), (2, "failed"), (59, "succeeded")):
        shaped(
            runtime,
            tenant,
            status=status,
            created_at=at(0),
            started_at=at(0),
            finished_at=at(minute),
        )
    shaped(
        runtime,
        tenant,
        status="succeeded",
        created_at=at(-9),
        started_at=at(-9),
        finished_at=at(-1),
    )
    # When the hour is read in 12 buckets
    buckets = runtime.store.timeseries.buckets(tenant, START, END, 12)
    # Then each lands in its bucket, and the one before the window in none
    assert [(b.succeeded, b.failed) for b in buckets] == [(2, 1)] + [(0, 0)] * 10 + [(1, 0)]
    assert buckets[0].start == START and buckets[-1].end == END
    assert buckets[1].start == at(5)


def test_p95_run_time_is_computed_per_bucket(runtime, make_tenant):
    tenant = make_tenant()
    inv = shaped(runtime, tenant, status="succeeded", created_at=at(0), finished_at=at(30))
    others = [
        shaped(runtime, tenant, status="succeeded", created_at=at(0), finished_at=at(30))
        for _ in range(19)
    ]
    # 20 attempts in the 09:00-09:05 bucket: 19 of 100 ms and one of 2 s
    attempt(runtime, inv, tenant, at(1), 2000)
    for other in others:
        attempt(runtime, other, tenant, at(2), 100)
    buckets = runtime.store.timeseries.buckets(tenant, START, END, 12)
    assert buckets[0].samples == 20
    # Interpolated between the 19th (100 ms) and 20th (2 s) values, as percentile_cont does
    assert buckets[0].p95_ms == pytest.approx(195)
    assert all(b.p95_ms is None for b in buckets[1:])


def test_queue_depth_counts_what_was_due_and_not_yet_started(runtime, make_tenant):
    tenant = make_tenant()
    # Waiting from minute 2 to 22 (then it started); waiting from 12 on (never started);
    # created at 3 but scheduled for minute 40: due only from 40
    shaped(runtime, tenant, status="running", created_at=at(2), started_at=at(22))
    shaped(runtime, tenant, status="queued", created_at=at(12))
    shaped(runtime, tenant, status="queued", created_at=at(3), scheduled_for=at(40))
    buckets = runtime.store.timeseries.buckets(tenant, START, END, 6)  # 10-minute buckets
    # At minutes 10, 20, 30, 40, 50, 60
    assert [b.waiting for b in buckets] == [1, 2, 1, 2, 2, 2]


def test_a_tenant_reads_only_its_own_figures(runtime, make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    shaped(runtime, mine, status="failed", created_at=at(0), finished_at=at(1))
    shaped(runtime, theirs, status="failed", created_at=at(0), finished_at=at(1))
    shaped(runtime, theirs, status="queued", created_at=at(0))
    own = runtime.store.timeseries.buckets(mine, START, END, 4)
    every = runtime.store.timeseries.buckets(None, START, END, 4)
    assert own[0].failed == 1 and own[-1].waiting == 0
    assert every[0].failed == 2 and every[-1].waiting == 1


@pytest.mark.parametrize("backend", ["embedded"])
def test_windows_end_on_a_bucket_boundary(backend):
    now = datetime(2030, 1, 1, 9, 7, 30, tzinfo=UTC)
    start, end = aligned_window(now, timedelta(hours=1), 12)
    assert (start, end) == (
        datetime(2030, 1, 1, 8, 10, tzinfo=UTC),
        datetime(2030, 1, 1, 9, 10, tzinfo=UTC),
    )
    assert len(bucket_edges(start, end, 12)) == 13
    with pytest.raises(ValueError):
        bucket_edges(end, start, 3)


# --- the SVG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["embedded"])
def test_a_bar_chart_is_plain_svg_with_a_title_on_every_bar(backend):
    svg = str(
        charts.stacked_bars(
            "Finished <per> 5 min",
            [
                charts.Series("succeeded", "ok", [3, 0, 1]),
                charts.Series("failed", "bad", [1, 0, 0]),
            ],
            charts.Slots(["09:00", "09:05", "09:10"]),
        )
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    # Heights scale to the tallest stack (4 of a top of 5), zero values draw nothing.
    assert len(re.findall(r"<rect ", svg)) == 3
    assert "<title>09:00: 3 succeeded</title>" in svg and "<title>09:00: 1 failed</title>" in svg
    # Text is escaped, and nothing the strict CSP refuses: no script, no style attribute
    assert "Finished &lt;per&gt; 5 min" in svg
    assert "<script" not in svg and "style=" not in svg and "on" + "load" not in svg


@pytest.mark.parametrize("backend", ["embedded"])
def test_a_line_breaks_where_a_slot_has_no_value(backend):
    svg = str(
        charts.line(
            "p95", charts.Series("p95", "info", [10, None, 30, 40]), charts.Slots(list("abcd"))
        )
    )
    path = re.search(r' d="([^"]+)"', svg)
    assert path is not None
    assert path.group(1).count("M") == 2 and path.group(1).count("L") == 1
    assert len(re.findall(r"<circle ", svg)) == 3


@pytest.mark.parametrize("backend", ["embedded"])
def test_axis_tops_are_round_numbers(backend):
    assert [charts.nice_ceiling(v) for v in (0, 0.3, 1, 3, 7, 12, 480, 1001)] == [
        1,
        0.5,
        1,
        5,
        10,
        20,
        500,
        2000,
    ]
