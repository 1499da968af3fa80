"""Multi-process mode: counters of several processes add up in one `/metrics` answer.

Real processes record into a shared `PROMETHEUS_MULTIPROC_DIR`, as gunicorn's web
processes and `ferry worker` do; the gateway's `/metrics` then reads that directory.
`FERRY_METRICS_DIR` names it and `runtime.metrics_dir` runs its life: joined by each
process, wiped by the first of a new group, left at exit. `ferry worker --metrics-port`
serves a process's counters without a web process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import falcon.testing
import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from runtime.cli import main as ferry_main
from runtime.errors import ConfigurationError, SettingsInvalid
from runtime.metrics import (
    MULTIPROC_ENV,
    mark_process_dead,
    process_metrics,
    start_metrics_server,
)
from runtime.metrics_dir import join, metrics_dir_of
from runtime.settings import Settings
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


# --- FERRY_METRICS_DIR: joined, wiped at start, left -------------------------------------------

#: How a Ferry process starts: its modules (and prometheus-client) are imported before the
#: settings are read; only then does it build its metrics.
JOIN_AFTER_IMPORT = textwrap.dedent(
    """
    import os, sys
    import runtime.cli  # imports prometheus-client, before any setting is read
    assert "prometheus_client" in sys.modules
    from runtime.metrics import process_metrics
    from runtime.settings import Settings
    metrics = process_metrics(Settings.from_env())
    for _ in range(int(sys.argv[1])):
        metrics.count_outcome(function="echo", tenant_id="t", outcome="succeeded", status="succeeded")
    print(os.getpid())
    """
)


def dead_pid() -> int:
    """The pid of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def succeeded_in(directory: Path) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "ferry_invocations_total" and s.labels.get("status") == "succeeded"
    )


def test_ferry_metrics_dir_holds_the_counts_of_a_process_that_imported_prometheus_first(tmp_path):
    # Given FERRY_METRICS_DIR (not PROMETHEUS_MULTIPROC_DIR) and a leftover of a dead process
    directory = tmp_path / "metrics"
    directory.mkdir()
    leftover = directory / f"counter_{dead_pid()}.db"
    leftover.write_bytes(b"")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "FERRY_METRICS_DIR": str(directory)}
    # When a process that imported prometheus-client first counts 3 invocations
    done = subprocess.run(
        [sys.executable, "-c", JOIN_AFTER_IMPORT, "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    # Then they are in the directory, under its pid, and the leftover was wiped
    assert succeeded_in(directory) == 3
    assert (directory / f"counter_{pid}.db").exists()
    assert not leftover.exists()
    assert (directory / f"ferry_{pid}.pid").exists()


def test_the_first_process_of_a_new_group_removes_only_the_last_groups_files(tmp_path):
    # Given the files of processes that are all gone, one of them with this pid (a
    # container's pid 1 after a restart), and a file that is not Ferry's
    gone, me = dead_pid(), 4_000_000  # above any pid_max: never alive
    names = [f"counter_{gone}.db", f"histogram_{gone}.db", f"ferry_{gone}.pid"]
    names += [f"counter_{me}.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("someone else's")
    # When a process joins
    removed = join(tmp_path, me)
    # Then every member file went, the foreign file stayed, and it is a member now
    assert removed == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", f"ferry_{me}.pid", "notes.txt"]


def test_a_process_joining_a_running_group_keeps_every_count(tmp_path):
    # Given a group with a live member (this test process) and a member that exited
    gone = dead_pid()
    for name in (f"ferry_{os.getpid()}.pid", f"counter_{os.getpid()}.db", f"counter_{gone}.db"):
        (tmp_path / name).write_bytes(b"")
    # When a restarted process joins
    assert join(tmp_path, dead_pid()) == 0
    # Then the exited member's counts stay: the sums must not drop while the group runs
    assert (tmp_path / f"counter_{gone}.db").exists()


def test_the_metrics_settings_refuse_what_cannot_work(monkeypatch):
    for name, value in [("FERRY_METRICS_DIR", "metrics"), ("FERRY_METRICS_PORT", "0")]:
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(SettingsInvalid, match=name):
                Settings.from_env()
    monkeypatch.setenv("FERRY_METRICS_DIR", "")
    assert Settings.from_env().metrics_dir is None
    # Two names for one directory must agree
    monkeypatch.setenv(MULTIPROC_ENV, "/run/a")
    with pytest.raises(ConfigurationError, match="FERRY_METRICS_DIR"):
        metrics_dir_of(Settings.from_env(metrics_dir="/run/b"))
    assert metrics_dir_of(Settings.from_env()) == "/run/a"


# --- the worker's own metrics server ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_metrics_server_serves_this_processs_counters(runtime):
    # Given a process's metrics (no shared directory) served on a port
    process_metrics(runtime.settings)
    port = free_port()
    server = start_metrics_server(port, addr="127.0.0.1")
    try:
        # When Prometheus scrapes it
        answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        # Then it gets this process's counters
        found = samples(answer.text)
        assert ("ferry_worker_starts_total", frozenset()) in found
        # And a second server on the same port is refused with the port's name
        with pytest.raises(ConfigurationError, match=f"metrics port {port}"):
            start_metrics_server(port, addr="127.0.0.1")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_ferry_worker_refuses_a_metrics_port_that_is_not_a_port(port, capsys):
    assert ferry_main(["worker", "--metrics-port", port]) == 1
    assert "--metrics-port takes a TCP port" in capsys.readouterr().err
