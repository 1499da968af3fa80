"""`usage_report`: a tenant's usage per function as CSV, built from the store."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from functions import usage_report as report
from runtime import Permanent
from runtime.errors import InputInvalid
from runtime.testing import FunctionHarness
from tests.waiting import finished, wait_for

HEADER = [
    "function",
    "invocations",
    "scheduled",
    "queued",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "cancelled",
    "success_rate",
    "p50_ms",
    "p95_ms",
    "attempts",
]


def accept(runtime, tenant, function, payload, **extra):
    inv, _ = runtime.invocations.accept(
        tenant_id=tenant, function=function, payload=payload, **extra
    )
    return inv


def run_all(runtime, tenant, calls):
    """Accept `(function, payload)` calls and wait until every one has finished."""
    invocations = [accept(runtime, tenant, fn, payload) for fn, payload in calls]
    for inv in invocations:
        wait_for(finished(runtime, inv.id), timeout=30, what=f"{inv.function} to finish")
    return invocations


def run_report(runtime, tenant, payload=None):
    inv = accept(runtime, tenant, "usage_report", payload or {})
    done = wait_for(finished(runtime, inv.id), timeout=30, what="the report")
    assert done.status == "succeeded", done.error
    return inv, done


def parse(text):
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == HEADER
    return {row[0]: dict(zip(HEADER, row, strict=True)) for row in lines[1:]}


def test_the_report_counts_the_tenants_invocations_by_function_and_status(
    runtime, worker, make_tenant
):
    # Given a tenant whose functions succeeded, failed, retried, wait and were cancelled
    ours, theirs = make_tenant(), make_tenant()
    run_all(
        runtime,
        ours,
        [
            ("echo", {"message": "one"}),
            ("echo", {"message": "two"}),
            ("echo", {"message": "three"}),
            ("flaky", {"fail_times": 1}),
            ("flaky", {"permanent": True}),
        ],
    )
    tomorrow = runtime.store.db.clock() + timedelta(days=1)
    accept(runtime, ours, "echo", {"message": "later"}, at=tomorrow)
    cancelled = accept(runtime, ours, "echo", {"message": "never"}, at=tomorrow)
    runtime.store.invocations.cancel(cancelled.id, ours)
    # And another tenant with invocations of the same function and of one only it uses
    run_all(runtime, theirs, [("echo", {"message": "x"})] * 4 + [("bad_output", {})])

    # When the first tenant runs its report over the default period
    inv, done = run_report(runtime, ours)

    # Then it lists its own functions only, with exact counts
    rows = parse(done.result["csv"])
    assert set(rows) == {"echo", "flaky"}
    assert done.result["rows"] == 2
    echo, flaky = rows["echo"], rows["flaky"]
    assert {k: echo[k] for k in HEADER[1:10]} == {
        "invocations": "5",
        "scheduled": "1",
        "queued": "0",
        "running": "0",
        "retrying": "0",
        "succeeded": "3",
        "failed": "0",
        "cancelled": "1",
        "success_rate": "1.0000",
    }
    assert echo["attempts"] == "3"
    assert {k: flaky[k] for k in HEADER[1:10]} == {
        "invocations": "2",
        "scheduled": "0",
        "queued": "0",
        "running": "0",
        "retrying": "0",
        "succeeded": "1",
        "failed": "1",
        "cancelled": "0",
        "success_rate": "0.5000",
    }
    assert flaky["attempts"] == "3"  # one retried once, one failed at once
    for row in (echo, flaky):
        assert 0 <= float(row["p50_ms"]) <= float(row["p95_ms"])
    # And the period ends when the report was accepted, 30 days long
    period = done.result["period"]
    until = datetime.fromisoformat(period["until"])
    assert until == inv.created_at
    assert datetime.fromisoformat(period["since"]) == until - timedelta(days=30)


def test_the_report_covers_only_its_period(runtime, worker, make_tenant):
    tenant = make_tenant()
    run_all(runtime, tenant, [("echo", {"message": "before"})] * 2)
    boundary = runtime.store.db.clock()
    run_all(runtime, tenant, [("flaky", {"fail_times": 0})])
    # A period that starts after the echoes and ends in the future
    _, done = run_report(
        runtime,
        tenant,
        {
            "since": boundary.isoformat(),
            "until": (boundary + timedelta(hours=1)).isoformat(),
        },
    )
    rows = parse(done.result["csv"])
    # The report itself is inside the period, running while it counts
    assert set(rows) == {"flaky", "usage_report"}
    assert rows["flaky"]["succeeded"] == "1"
    assert rows["usage_report"]["running"] == "1"
    assert rows["usage_report"]["success_rate"] == ""
    assert rows["usage_report"]["p50_ms"] == "" and rows["usage_report"]["p95_ms"] == ""
    # A period before everything: a header and no rows
    _, empty = run_report(runtime, tenant, {"until": "2000-01-01T00:00:00Z"})
    assert empty.result["rows"] == 0
    assert empty.result["csv"] == ",".join(HEADER) + "\r\n"
    assert empty.result["period"]["since"].startswith("1999-12-02T00:00:00")


def test_a_since_later_than_the_default_until_fails_permanently():
    # The default `until` is when the invocation was accepted; `since` is a week later
    with FunctionHarness() as harness:
        next_week = harness.store.db.clock() + timedelta(days=7)
        with pytest.raises(Permanent, match="earlier than until"):
            harness.run(report.usage_report, {"since": next_week.isoformat()})


@pytest.mark.parametrize(
    "payload",
    [
        {"since": "2024-02-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"},
        {"since": "2024-01-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"},
        {"since": "last tuesday"},
    ],
)
def test_a_bad_period_is_refused_before_anything_is_stored(runtime, make_tenant, payload):
    tenant = make_tenant()
    with pytest.raises(InputInvalid):
        runtime.invocations.accept(tenant_id=tenant, function="usage_report", payload=payload)
    assert runtime.store.invocations.list(tenant)[0] == []


def test_times_without_an_offset_are_utc():
    given = report.Input.model_validate(
        {"since": "2024-01-01T00:00:00", "until": "2024-01-02T02:00:00+02:00"}
    )
    assert given.since == datetime(2024, 1, 1, tzinfo=UTC)
    assert given.until == datetime(2024, 1, 2, tzinfo=UTC)


def test_the_report_runs_on_the_heavy_queue(runtime):
    assert runtime.registry.get("usage_report").queue == "heavy"


# --- the arithmetic --------------------------------------------------------------------------


def test_percentiles_interpolate_like_percentile_cont():
    assert report.percentile([], 0.5) is None
    assert report.percentile([7.0], 0.95) == 7.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    hundred = [float(n) for n in range(1, 101)]
    assert report.percentile(hundred, 0.5) == pytest.approx(50.5)
    assert report.percentile(hundred, 0.95) == pytest.approx(95.05)


@pytest.mark.integration
def test_percentiles_agree_with_postgresql(pg_database):
    values = [3.0, 1.0, 400.0, 15.0, 15.0, 27.0, 8.0]
    engine = sa.create_engine(pg_database)
    try:
        with engine.connect() as conn:
            p50, p95 = conn.execute(
                sa.text(
                    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v),"
                    " percentile_cont(0.95) WITHIN GROUP (ORDER BY v)"
                    " FROM unnest(CAST(:values AS double precision[])) AS v"
                ),
                {"values": values},
            ).one()
    finally:
        engine.dispose()
    ordered = sorted(values)
    assert report.percentile(ordered, 0.5) == pytest.approx(p50)
    assert report.percentile(ordered, 0.95) == pytest.approx(p95)


def test_rows_fold_into_counts_rates_durations_and_attempts():
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def ran(ms):
        return t0, t0 + timedelta(milliseconds=ms)

    usage = report.summarise(
        [
            ("b", "succeeded", 1, *ran(100)),
            ("a", "succeeded", 2, *ran(10)),
            ("a", "failed", 4, *ran(30)),
            ("a", "succeeded", 1, *ran(20)),
            ("a", "cancelled", 0, None, t0),
            ("a", "retrying", 1, None, None),
        ]
    )
    rows = parse(report.render_csv(usage))
    assert list(rows) == ["a", "b"]
    assert rows["a"] == {
        "function": "a",
        "invocations": "5",
        "scheduled": "0",
        "queued": "0",
        "running": "0",
        "retrying": "1",
        "succeeded": "2",
        "failed": "1",
        "cancelled": "1",
        "success_rate": "0.6667",
        "p50_ms": "20.0",
        "p95_ms": "29.0",
        "attempts": "8",
    }
    assert rows["b"]["p50_ms"] == rows["b"]["p95_ms"] == "100.0"
