"""The `scheduler` process: periodiq is the clock, Ferry decides what is due.

    ferry scheduler                                  # the Procfile's `scheduler`
    periodiq runtime.scheduling.periodiq_entry:boot  # the same, periodiq's own command

`ferry scheduler` (`run`) sets up Ferry's logging and then runs periodiq's main loop on
this module, so every line the process writes, periodiq's own included, is in
`FERRY_LOG_FORMAT`; periodiq's command writes its first line in its own format, before
it imports this module. periodiq imports this module, calls `boot()` and then schedules
the periodic actors of the broker `boot` set (dramatiq's global broker). There is one:
`ferry_tick`, every minute, whose whole body is `Scheduler.fire_due()`.

Where the tick runs. periodiq sends a periodic actor's message through the broker at
each tick; normally a worker consumes it. Ferry's tick actor lives instead on an
`InlineBroker` of this process, which runs each message as it is sent, so the decision
is made here, on time:

- a busy `scheduled` queue cannot delay the decision, and periodiq's `skip_delay`
  (which drops a late periodic message silently) never applies: nothing waits in a
  queue. What is decided becomes invocations with `scheduled_for` = the tick; if they
  wait for a worker, they still run, and `started_at - scheduled_for` shows how late;
- a worker fleet of any size adds no ticks, and a scheduler process needs no worker;
- periodiq alone fires in the process's local zone, fires every tick in every process
  and re-fires a minute it restarts in. None of that reaches Ferry: each schedule's
  ticks come from its own cron and time zone (`crontime`), and the store's cursor plus
  the `schedule:{id}:{tick}` keys make any number of these processes fire each tick
  once (see `runtime.scheduling.scheduler`). periodiq also fires at start-up, which
  gives `run_once` its catch-up right away.

Stopping. SIGTERM or SIGINT ends the process with exit code 0: at once while it waits
for the next minute, or after the tick it is in (a second signal does not wait). Killing
it at any moment is safe too: the next scheduler fires what it left.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import dramatiq
import periodiq
import structlog
from dramatiq.brokers.stub import StubBroker
from periodiq import cron

from runtime.app import Runtime
from runtime.errors import ConfigurationError, FerryError
from runtime.logs import configure_logging
from runtime.scheduling.scheduler import Scheduler
from runtime.settings import Settings

log = structlog.get_logger("ferry.scheduler")

#: What periodiq imports and calls: this module's `boot`.
ENTRY = f"{__name__}:boot"
TICK_ACTOR = "ferry_tick"
#: Ferry reads the store every minute; each schedule's own cron says what is due.
TICK_CRON = "* * * * *"
#: Exit code when the configuration (settings, schedules, schema) stops start-up.
EXIT_BAD_CONFIGURATION = 2


class PeriodicOption(dramatiq.Middleware):
    """Declares periodiq's `periodic` actor option, without periodiq's late-message skip."""

    @property
    def actor_options(self) -> set[str]:
        return {"periodic"}


class StopOnSignal:
    """SIGTERM and SIGINT end the process with exit code 0, never in the middle of a tick.

    periodiq's main thread waits for the next minute in a blocking queue read, which a
    signal handler interrupts: there the handler raises `SystemExit(0)`. During a tick it
    only marks the stop, and the tick raises it when done; a second signal does not wait.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._ticking = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self.on_signal)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # No logging here: the signal may have interrupted a write to the log.
        again = self.signal_name is not None
        self.signal_name = signal.Signals(signum).name
        if again or not self._ticking:
            raise SystemExit(0)

    @contextlib.contextmanager
    def tick(self) -> Iterator[None]:
        """A tick that a signal lets finish; the stop it asked for follows."""
        self._ticking = True
        try:
            yield
        finally:
            self._ticking = False
        if self.signal_name is not None:
            raise SystemExit(0)


class InlineBroker(StubBroker):
    """A broker that runs each message in the sending thread, as it is sent.

    periodiq's loop sends at most one tick at a time, so ticks never overlap; a tick
    that fails is logged and the next one (a minute later) covers its work.
    """

    def __init__(self, *, stop: StopOnSignal | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.stop = stop or StopOnSignal()

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        with self.stop.tick():
            self.emit_before("enqueue", message, delay)
            actor = self.get_actor(message.actor_name)
            try:
                actor.fn(*message.args, **message.kwargs)
            except Exception as ex:
                log.error(
                    "scheduler_tick_failed",
                    error_type=type(ex).__name__,
                    error=str(ex),
                    exc_info=True,
                )
            self.emit_after("enqueue", message, delay)
        return message


def build_clock_broker(scheduler: Scheduler, stop: StopOnSignal | None = None) -> InlineBroker:
    """The broker periodiq drives: one periodic actor that fires what is due."""
    broker = InlineBroker(stop=stop, middleware=[PeriodicOption()])

    def ferry_tick() -> None:
        report = scheduler.fire_due()
        log.info(
            "scheduler_tick",
            now=report.now.isoformat(),
            created=len(report.created),
            not_fired=report.passed_over or None,
            failed=report.failed or None,
        )

    declare = dramatiq.actor(
        broker=broker, actor_name=TICK_ACTOR, queue_name="ferry_clock", periodic=cron(TICK_CRON)
    )
    declare(ferry_tick)
    return broker


def start(settings: Settings, stop: StopOnSignal | None = None) -> InlineBroker:
    """Build the runtime and scheduler, register the schedules; the clock's broker."""
    runtime = Runtime(settings)
    try:
        if not runtime.store.is_current():
            raise ConfigurationError(
                "the store has not been migrated to the newest schema; run `ferry migrate`"
            )
        scheduler = Scheduler.from_runtime(runtime)
        scheduler.register()
    except BaseException:
        runtime.close()
        raise
    log.info("scheduler_started", schedules=scheduler.book.ids())
    broker = build_clock_broker(scheduler, stop)
    # However the process ends (a signal, periodiq giving up), say so and close the pools.
    atexit.register(_stopped, runtime, broker.stop)
    return broker


def _stopped(runtime: Runtime, stop: StopOnSignal) -> None:
    log.info("scheduler_stopped", signal=stop.signal_name)
    runtime.close()


def boot() -> None:
    """periodiq's entry: read `FERRY_*`, set the clock's broker as dramatiq's broker.

    A bad setting, a bad schedule or an old schema stops start-up with one line naming
    it (exit code 2; an unreachable store: 1), before periodiq's own error handling can
    bury it in a traceback. From here on, SIGTERM and SIGINT stop the process with 0.
    """
    stop = StopOnSignal()
    stop.install()
    try:
        settings = Settings.from_env()
        configure_logging(settings)
        broker = start(settings, stop)
    except FerryError as ex:  # a bad configuration, or the store is unreachable
        stop.uninstall()
        sys.stderr.write(f"ferry scheduler: {ex}\n")
        sys.stderr.flush()
        code = EXIT_BAD_CONFIGURATION if isinstance(ex, ConfigurationError) else 1
        raise SystemExit(code) from ex
    dramatiq.set_broker(broker)


def run(settings: Settings) -> int:
    """`ferry scheduler`: periodiq's loop on `boot`, logging in Ferry's format from the start.

    Returns periodiq's exit code; `boot` and the stop signals end it with `SystemExit`.
    """
    configure_logging(settings)
    args = periodiq.make_argument_parser().parse_args([ENTRY])
    return int(periodiq.main(args))
