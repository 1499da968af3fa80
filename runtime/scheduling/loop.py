"""The scheduler as a thread: the clock of `ferry dev` (and of tests with a fast clock).

periodiq cannot run inside another process (it drives itself with SIGALRM in the main
thread), so `ferry dev` runs this loop instead. It calls the same `Scheduler.fire_due`
as the periodiq process, once per minute of its clock and once at start (which fires
what `run_once` owes after downtime). Running it beside a periodiq process, or several
of it, is safe: firing is idempotent (see `runtime.scheduling.scheduler`).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from runtime.scheduling.scheduler import Scheduler
from runtime.store import Clock, utcnow

if TYPE_CHECKING:
    from runtime.app import Runtime

log = structlog.get_logger("ferry.scheduler")

_MINUTE = timedelta(minutes=1)


def _minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class SchedulerThread:
    """Calls `scheduler.fire_due` once in every minute of `clock`, until stopped.

    It looks at the clock at least every `check_interval_s` real seconds (sooner when
    the next minute is nearer), and fires at the first look in a new minute. A round
    that fails (the store is down) is tried again at the next look. Keep the interval
    short for a fast test clock.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        clock: Clock = utcnow,
        check_interval_s: float = 1.0,
        name: str = "ferry-scheduler",
    ) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.check_interval_s = check_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        #: Completed `fire_due` calls (for tests and logs).
        self.rounds = 0

    def start(self) -> SchedulerThread:
        self.scheduler.register(self.clock())
        self._thread.start()
        log.info("scheduler_started", schedules=len(self.scheduler.book))
        return self

    def _loop(self) -> None:
        done_minute: datetime | None = None
        while not self._stop.is_set():
            now = self.clock()
            if _minute_of(now) != done_minute:
                try:
                    self.scheduler.fire_due(now)
                    done_minute = _minute_of(now)
                    self.rounds += 1
                except Exception as ex:  # the store may be back at the next look
                    log.warning(
                        "scheduler_round_failed", error_type=type(ex).__name__, error=str(ex)
                    )
            until_next = (_minute_of(now) + _MINUTE - self.clock()).total_seconds()
            self._stop.wait(max(0.01, min(self.check_interval_s, until_next + 0.001)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        log.info("scheduler_stopped")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def start_scheduler_thread(runtime: Runtime) -> SchedulerThread:
    """Load the runtime's schedules (a bad one raises), register them and start firing.

    The thread fires with the scheduler of `runtime.schedules`, so the API, the dashboard
    and the thread share one book, which `ferry dev`'s reload swaps for all of them.
    """
    scheduler: Scheduler = runtime.schedules.scheduler
    return SchedulerThread(scheduler, clock=runtime.store.db.clock).start()
