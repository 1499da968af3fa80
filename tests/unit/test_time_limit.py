"""`TimeLimits`: a deadline around one call, and nothing after it returns."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded

from runtime.worker import time_limit
from runtime.worker.time_limit import TimeLimits
from tests.waiting import wait_for


def busy(seconds: float) -> str:
    """Run Python code (where an asynchronous exception lands) for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(100))
    return "done"


@pytest.fixture
def raised(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Any]]:
    """Record what the time limits would raise or clear in a thread, instead of doing it."""
    calls: list[tuple[int, Any]] = []

    def record(thread_id: int, exception: Any) -> int:
        calls.append((thread_id, exception))
        return 1

    monkeypatch.setattr(time_limit, "_set_async_exception", record)
    return calls


def test_a_call_over_its_limit_is_interrupted():
    with pytest.raises(TimeLimitExceeded):
        TimeLimits().run(0.05, lambda: busy(10))


def test_a_call_within_its_limit_returns_and_nothing_arrives_afterwards():
    limits = TimeLimits()
    assert limits.run(0.2, lambda: "quick") == "quick"
    # Python code running well past the deadline is not interrupted
    assert busy(0.4) == "done"


def test_a_deadline_disarmed_in_time_never_fires(raised):
    TimeLimits().run(0.05, lambda: "quick")
    time.sleep(0.2)
    assert raised == []


def test_an_exception_set_but_not_yet_delivered_is_cleared_when_the_call_returns(raised):
    # Given a call that returns only after its deadline fired, with the exception not
    # delivered (the recording stub stands for an exception still pending on the thread)
    limits = TimeLimits()
    me = threading.get_ident()
    result = limits.run(0.01, lambda: wait_for(lambda: raised, what="the deadline") and "late")
    # Then the exception was set once, and cleared as the call's deadline was disarmed,
    # so it cannot reach the code that runs next
    assert result == "late"
    assert raised == [(me, TimeLimitExceeded), (me, None)]


def test_each_thread_has_its_own_deadline():
    limits = TimeLimits()
    outcomes: dict[str, str] = {}

    def run(name: str, seconds: float, work: float) -> None:
        try:
            outcomes[name] = limits.run(seconds, lambda: busy(work))
        except TimeLimitExceeded:
            outcomes[name] = "interrupted"

    threads = [
        threading.Thread(target=run, args=("over", 0.05, 10)),
        threading.Thread(target=run, args=("within", 10, 0.3)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert outcomes == {"over": "interrupted", "within": "done"}


def test_a_nearer_deadline_armed_while_the_watcher_sleeps_toward_a_later_one_fires():
    # Given a call under a long limit, so the watcher sleeps toward its far deadline
    limits = TimeLimits()
    started = threading.Event()
    release = threading.Event()
    long_call = threading.Thread(
        target=lambda: limits.run(60, lambda: (started.set(), release.wait(10))), daemon=True
    )
    long_call.start()
    assert started.wait(5)

    # When another thread runs a call over a short limit, it is interrupted all the same
    with pytest.raises(TimeLimitExceeded):
        limits.run(0.05, lambda: busy(10))
    release.set()
    long_call.join(5)


def test_the_watcher_serves_call_after_call_and_leaves_once_idle():
    limits = TimeLimits(idle_s=0.2)
    limits.run(1, lambda: "first")
    watcher = limits._watcher
    assert watcher is not None
    limits.run(1, lambda: "second")
    # The same watcher served the second call: no thread started per call
    assert limits._watcher is watcher
    # A disarm does not wake the watcher (that would cost a thread switch per call): if it
    # went to sleep toward a call's deadline, it leaves idle_s after that deadline, so
    # about 1.2 s from here at the latest; the margin is for a loaded machine.
    wait_for(lambda: limits._watcher is None, timeout=15, what="the idle watcher to leave")
    assert not watcher.is_alive() or watcher.join(5) is None
    # and the next call starts one again
    with pytest.raises(TimeLimitExceeded):
        limits.run(0.05, lambda: busy(10))
