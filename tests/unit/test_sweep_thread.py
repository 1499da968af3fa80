"""The sweep thread: a failed sweep is an error with its traceback, counted; successes are timed."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from runtime.metrics import Metrics
from runtime.recovery.sweeper import SweepReport, SweepThread
from tests.waiting import wait_for

LAST_SUCCESS = "ferry_sweep_last_success_timestamp_seconds"
FAILURES = "ferry_sweep_failures_total"


class ScriptedSweep:
    """A sweep that raises the given errors in turn, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_a_failed_sweep_is_logged_at_error_level_with_its_traceback_and_counted(registry):
    # Given a sweep whose store query fails
    broken = RuntimeError("relation invocations does not exist")
    thread = SweepThread(
        ScriptedSweep(broken), 1.0, metrics=Metrics(registry=registry), clock=lambda: 1_700.0
    )
    # When it runs
    with capture_logs() as logs:
        assert thread.sweep_once() is False
    # Then the failure is an error with the exception (rendered with its traceback)
    [entry] = [e for e in logs if e["event"] == "sweep_failed"]
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is broken
    assert entry["error_type"] == "RuntimeError" and entry["consecutive_failures"] == 1
    # And it is counted, with no success on record
    assert registry.get_sample_value(FAILURES) == 1
    assert registry.get_sample_value(LAST_SUCCESS) == 0


def test_a_successful_sweep_records_when_it_happened(registry):
    thread = SweepThread(
        ScriptedSweep(OSError("down"), OSError("down")),
        1.0,
        metrics=Metrics(registry=registry),
        clock=lambda: 1_700.0,
    )
    with capture_logs() as logs:
        assert [thread.sweep_once() for _ in range(3)] == [False, False, True]
    assert registry.get_sample_value(FAILURES) == 2
    assert registry.get_sample_value(LAST_SUCCESS) == 1_700.0
    [recovered] = [e for e in logs if e["event"] == "sweep_recovered"]
    assert recovered["failed_sweeps"] == 2


def test_the_thread_keeps_sweeping_after_a_failure(registry):
    sweep = ScriptedSweep(RuntimeError("once"))
    thread = SweepThread(sweep, 0.01, metrics=Metrics(registry=registry))
    with capture_logs():
        thread.start()
        try:
            wait_for(lambda: registry.get_sample_value(LAST_SUCCESS), what="a successful sweep")
        finally:
            thread.stop()
    assert registry.get_sample_value(FAILURES) == 1 and sweep.calls >= 2


def test_a_process_that_does_not_sweep_reports_no_sweep_figures(registry):
    # A web process's "never swept" would look like a stalled sweep beside the workers'.
    Metrics(registry=registry)
    assert registry.get_sample_value(LAST_SUCCESS) is None
    assert registry.get_sample_value(FAILURES) is None


def test_reclaimed_attempts_and_removed_invocations_are_counted(registry):
    # Given sweeps that took back 2 lapsed attempts and removed 300, then 0 and 5 expired rows
    reports = iter(
        [
            SweepReport(lost=2, sent=2, failed_sends=0, removed=300),
            SweepReport(lost=0, sent=0, failed_sends=0, removed=5),
        ]
    )
    thread = SweepThread(lambda: next(reports), 1.0, metrics=Metrics(registry=registry))
    # When both run
    assert thread.sweep_once() and thread.sweep_once()
    # Then the counters add them up
    assert registry.get_sample_value("ferry_sweep_reclaimed_attempts_total") == 2
    assert registry.get_sample_value("ferry_retention_removed_invocations_total") == 305
