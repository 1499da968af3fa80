"""Multi-process mode: counters of several processes add up in one `/metrics` answer.

Real processes record into a shared `PROMETHEUS_MULTIPROC_DIR`, as gunicorn's web
processes and `ferry worker` do; the gateway's `/metrics` then reads that directory.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import falcon.testing
from prometheus_client.parser import text_string_to_metric_families

from runtime.metrics import MULTIPROC_ENV, mark_process_dead, process_metrics
from tests.unit.test_dashboard import build_app

ROOT = Path(__file__).resolve().parents[2]

RECORD = textwrap.dedent(
    """
    import os, sys
    from runtime.metrics import Metrics
    metrics = Metrics()
    succeeded, failed = int(sys.argv[1]), int(sys.argv[2])
    for _ in range(succeeded):
        metrics.count_outcome(function="echo", tenant_id="t", outcome="succeeded", status="succeeded")
        metrics.observe_run(function="echo", tenant_id="t", duration_s=0.2)
    for _ in range(failed):
        metrics.count_outcome(function="echo", tenant_id="t", outcome="failed", status="failed")
    metrics.in_progress.labels(function="echo").inc()  # still running when the process ends
    metrics.worker_starts.inc()
    print(os.getpid())
    """
)


def record_in_a_process(directory: Path, succeeded: int, failed: int) -> int:
    """Run a separate Python process that records into `directory`; its pid."""
    result = subprocess.run(
        [sys.executable, "-c", RECORD, str(succeeded), str(failed)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", MULTIPROC_ENV: str(directory), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout.strip())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_of_every_process_add_up(runtime, tmp_path, monkeypatch):
    # Given two processes (a web and a worker, say) that counted into one directory
    directory = tmp_path / "metrics"
    directory.mkdir()
    first = record_in_a_process(directory, succeeded=3, failed=1)
    second = record_in_a_process(directory, succeeded=2, failed=0)
    assert {p.name for p in directory.iterdir()} >= {f"counter_{first}.db", f"counter_{second}.db"}
    # and a gateway started with the same PROMETHEUS_MULTIPROC_DIR
    process_metrics(runtime.settings)  # this process's own metrics exist before the variable
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    client = falcon.testing.TestClient(build_app(runtime))

    # When Prometheus scrapes it
    found = samples(client.simulate_get("/metrics").text)

    # Then it reports the sum over both processes
    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset(labels.items()))]

    assert value("ferry_invocations_total", function="echo", status="succeeded") == 5
    assert value("ferry_invocations_total", function="echo", status="failed") == 1
    assert value("ferry_invocation_duration_seconds_count", function="echo") == 5
    assert value("ferry_worker_starts_total") == 2
    assert value("ferry_attempts_in_progress", function="echo") == 2
    # plus the figures read at scrape time
    assert ("ferry_queue_length", frozenset({("queue", "default")})) in found

    # When one process is marked dead, its live gauge goes but its counts stay
    mark_process_dead(first)
    found = samples(client.simulate_get("/metrics").text)
    assert value("ferry_attempts_in_progress", function="echo") == 1
    assert value("ferry_invocations_total", function="echo", status="succeeded") == 5
