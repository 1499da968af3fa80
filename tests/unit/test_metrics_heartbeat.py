"""Worker heartbeats: registered, beating, stale, lost once, stopped, pruned; on both backends."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from runtime.app import Runtime
from runtime.errors import SettingsInvalid
from runtime.metrics import Metrics
from runtime.recovery.heartbeat import Heartbeat, HeartbeatOptions
from runtime.settings import Settings
from runtime.store.workers import Workers
from tests.waiting import wait_for

OPTIONS = HeartbeatOptions(interval_s=5, stale_after_s=30, retention_s=3600)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(registry=CollectorRegistry())


def lost_count(metrics: Metrics) -> float:
    return metrics.workers_lost._value.get()  # type: ignore[attr-defined]


def beat(clocked: Runtime, metrics: Metrics, worker_id: str, **kwargs) -> Heartbeat:
    """A heartbeat the test registers and beats by hand (its thread is not started)."""
    return Heartbeat(
        clocked.store.workers,
        worker_id,
        queues=["default"],
        threads=4,
        options=OPTIONS,
        metrics=metrics,
        **kwargs,
    )


def states(clocked: Runtime) -> dict[str, str]:
    now = clocked.store.db.clock()
    return {w.id: w.display_state(now, OPTIONS.stale_after_s) for w in clocked.store.workers.list()}


def test_a_worker_registers_beats_and_stops_cleanly(clocked, clock, metrics):
    # Given a worker that starts
    heartbeat = beat(clocked, metrics, "host-a:1:aaa", hostname="host-a", pid=1)
    heartbeat.register()
    try:
        # Then it is listed live at once, with its queues and threads
        [view] = clocked.store.workers.list()
        assert (view.id, view.hostname, view.pid, view.queues, view.threads) == (
            "host-a:1:aaa",
            "host-a",
            1,
            ("default",),
            4,
        )
        assert states(clocked) == {"host-a:1:aaa": "live"}
        assert metrics.worker_starts._value.get() == 1  # type: ignore[attr-defined]
        # When time passes and it beats, its last heartbeat moves on
        clock.advance(20)
        heartbeat.beat_once()
        assert clocked.store.workers.list()[0].last_seen_at == clock.now
        # When it drains, then exits
        heartbeat.stopping()
        assert states(clocked) == {"host-a:1:aaa": "stopping"}
    finally:
        heartbeat.stop()
    view = clocked.store.workers.list()[0]
    assert view.state == "stopped" and view.stopped_at == clock.now


def test_a_silent_worker_turns_stale_then_lost_and_is_counted_once(clocked, clock, metrics):
    # Given two workers on different hosts
    first = beat(clocked, metrics, "host-a:1:aaa", hostname="host-a", pid=1)
    second = beat(clocked, metrics, "host-b:2:bbb", hostname="host-b", pid=2)
    first.register()
    second.register()
    try:
        # When the first stops beating (killed) for longer than stale_after_s
        clock.advance(OPTIONS.stale_after_s + 1)
        assert states(clocked)["host-a:1:aaa"] == "stale"
        with capture_logs() as logs:
            second.beat_once()
        # Then the second marks it lost, logs it, and counts it
        assert states(clocked) == {"host-a:1:aaa": "lost", "host-b:2:bbb": "live"}
        assert [e["lost_worker_id"] for e in logs if e["event"] == "worker_lost"] == [
            "host-a:1:aaa"
        ]
        assert lost_count(metrics) == 1
        # and neither a later beat nor another observer counts it again
        clock.advance(5)
        second.beat_once()
        assert clocked.store.workers.mark_lost(stale_after_s=OPTIONS.stale_after_s) == []
        assert lost_count(metrics) == 1
        # When the lost worker beats again (it was only cut off), it is running again
        with capture_logs() as logs:
            first.beat_once()
        assert states(clocked)["host-a:1:aaa"] == "live"
        assert any(e["event"] == "worker_heartbeat_resumed" for e in logs)
    finally:
        first.stop()
        second.stop()


def test_a_restarted_worker_reports_its_dead_predecessor_at_once(clocked, clock, metrics):
    # Given a worker row of this host whose process has exited
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    workers = clocked.store.workers
    workers.register("host-a:dead", hostname="host-a", pid=dead_pid, queues=["default"], threads=1)
    # and one whose process lives (this test's parent), both quiet for a little while
    import os

    workers.register(
        "host-a:alive", hostname="host-a", pid=os.getppid(), queues=["default"], threads=1
    )
    clock.advance(2 * OPTIONS.interval_s + 1)  # quiet, but far from stale
    # When a new worker starts on the same host
    newcomer = beat(clocked, metrics, "host-a:new", hostname="host-a", pid=os.getpid())
    newcomer.register()
    try:
        # Then the dead one is lost at once, the live one is left alone
        assert states(clocked) == {
            "host-a:dead": "lost",
            "host-a:alive": "live",
            "host-a:new": "live",
        }
        assert lost_count(metrics) == 1
    finally:
        newcomer.stop()


def test_ended_workers_are_pruned_after_the_retention(clocked, clock, metrics):
    workers = clocked.store.workers
    workers.register("old", hostname="h", pid=1, queues=["default"], threads=1)
    workers.set_state("old", "stopped")  # type: ignore[arg-type]
    workers.register("running-but-silent", hostname="h", pid=2, queues=["default"], threads=1)
    clock.advance(OPTIONS.retention_s + 1)
    workers.register("recent", hostname="h", pid=3, queues=["default"], threads=1)
    workers.set_state("recent", "stopped")  # type: ignore[arg-type]
    assert workers.prune(retention_s=OPTIONS.retention_s) == 1
    # A silent worker is not pruned until it is marked lost, so its loss is counted first.
    assert {w.id for w in workers.list()} == {"running-but-silent", "recent"}


def test_a_heartbeat_survives_a_store_that_does_not_answer(clocked, metrics):
    class Broken(Workers):
        def beat(self, worker_id):
            raise ConnectionError("store gone")

    heartbeat = Heartbeat(
        Broken(clocked.store.db),
        "w",
        queues=["default"],
        threads=1,
        options=OPTIONS,
        metrics=metrics,
    )
    with capture_logs() as logs:
        heartbeat.beat_once()  # does not raise
    assert [e["step"] for e in logs if e["event"] == "heartbeat_failed"] == ["beat"]


def test_heartbeat_options_refuse_a_stale_limit_below_two_beats():
    with pytest.raises(ValueError):
        HeartbeatOptions(interval_s=10, stale_after_s=15)
    assert HeartbeatOptions.from_settings(Settings.from_env()) == HeartbeatOptions()
    with pytest.raises(SettingsInvalid, match="worker_stale_after_s"):
        Settings.from_env(worker_heartbeat_s=10, worker_stale_after_s=15)


def test_the_heartbeat_thread_beats_by_itself(runtime, metrics):
    # Given a heartbeat started with a short interval on the real clock
    heartbeat = Heartbeat(
        runtime.store.workers,
        "w-thread",
        queues=["default"],
        threads=1,
        options=HeartbeatOptions(interval_s=0.05, stale_after_s=0.5),
        metrics=metrics,
    )
    heartbeat.start()
    try:
        first_seen = runtime.store.workers.list()[0].last_seen_at
        # Then its last heartbeat keeps moving without anyone calling it
        wait_for(
            lambda: runtime.store.workers.list()[0].last_seen_at > first_seen,
            what="a heartbeat from the thread",
        )
    finally:
        heartbeat.stop()
    assert runtime.store.workers.list()[0].state == "stopped"


def test_many_workers_noticing_one_loss_at_once_mark_it_once(clocked, clock):

    workers = clocked.store.workers
    workers.register("silent", hostname="h", pid=1, queues=["default"], threads=1)
    clock.advance(OPTIONS.stale_after_s + 1)
    results: list[list[str]] = []
    start = threading.Barrier(6)

    def notice() -> None:
        start.wait()
        results.append(clocked.store.workers.mark_lost(stale_after_s=OPTIONS.stale_after_s))

    threads = [threading.Thread(target=notice) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(i for marked in results for i in marked) == ["silent"]
