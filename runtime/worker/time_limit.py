"""Stop a handler that runs past its function's timeout, and nothing else.

Dramatiq's `TimeLimit` middleware arms a deadline for the whole message (hooks and actor
body) and raises `TimeLimitExceeded` into the worker thread after releasing its lock, so
disarming it cannot rule out an exception still on its way. Recording an attempt's
outcome must not be cut off that way. `TimeLimits.run` arms a deadline around one call:
the watcher raises only while holding the lock that disarming takes, and disarming
clears an exception set but not yet delivered. So a `TimeLimitExceeded` is raised by
`run` or never, and the code after it (the recording) cannot be interrupted.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from dramatiq.middleware.time_limit import TimeLimitExceeded

log = structlog.get_logger("ferry.time_limit")

T = TypeVar("T")


def _set_async_exception(thread_id: int, exception: type[BaseException] | None) -> int:
    """Raise `exception` in the thread at its next bytecode, or clear a pending one (None)."""
    raised = ctypes.py_object(exception) if exception is not None else None
    count: int = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), raised)
    return count


class TimeLimits:
    """Deadlines of the calls running under `run`, one per thread, and their watcher.

    The watcher thread sleeps until the nearest deadline. A new deadline wakes it only if
    it is nearer than that: the calls of one function all get the same timeout, so under
    load an arm costs no thread switch. Idle for `idle_s` with nothing armed, it exits
    (the next `run` starts it again).
    """

    def __init__(self, idle_s: float = 2.0) -> None:
        self._deadlines: dict[int, float] = {}
        self._changed = threading.Condition(threading.Lock())
        self._watcher: threading.Thread | None = None
        self._idle_s = idle_s
        #: When the watcher wakes next on its own (monotonic seconds).
        self._wake_at = 0.0

    def run(self, seconds: float, call: Callable[[], T]) -> T:
        """`call()`, interrupted by `TimeLimitExceeded` if it runs over `seconds`.

        Once `run` has returned or raised, no `TimeLimitExceeded` of its deadline can
        reach the thread.
        """
        thread_id = threading.get_ident()
        self._arm(thread_id, time.monotonic() + seconds)
        try:
            return call()
        finally:
            self._disarm(thread_id)

    def _arm(self, thread_id: int, deadline: float) -> None:
        with self._changed:
            self._deadlines[thread_id] = deadline
            if self._watcher is None:
                self._wake_at = deadline
                self._watcher = threading.Thread(
                    target=self._watch, name="ferry-time-limits", daemon=True
                )
                self._watcher.start()
            elif deadline < self._wake_at:
                self._changed.notify()

    def _disarm(self, thread_id: int) -> None:
        with self._changed:
            if self._deadlines.pop(thread_id, None) is None:
                # The watcher fired (and dropped the deadline). If the exception has not
                # been delivered yet, it is still pending on this thread: clear it.
                _set_async_exception(thread_id, None)

    def _watch(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for thread_id, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        # Raised under the lock, so `_disarm` sees either an armed deadline
                        # or a fired one whose exception is already set.
                        del self._deadlines[thread_id]
                        _set_async_exception(thread_id, TimeLimitExceeded)
                        log.warning("time_limit_exceeded", thread_id=thread_id)
                if self._deadlines:
                    self._wake_at = min(self._deadlines.values())
                    self._changed.wait(self._wake_at - now)
                    continue
                # Nothing armed: wait a while for the next call before leaving. An arm in
                # the meantime notifies (its deadline is before this wake-up).
                self._wake_at = now + self._idle_s
                self._changed.wait(self._idle_s)
                if not self._deadlines:
                    self._watcher = None
                    return
