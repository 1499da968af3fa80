"""Polling helpers: wait for a state, with a generous bound (never a timing assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def finished(runtime: Any, invocation_id: str) -> Callable[[], Any]:
    """A check for `wait_for`: the invocation's view once it has finished, else None."""

    def check() -> Any:
        view = runtime.store.invocations.get(invocation_id)
        return view if view.finished else None

    return check
