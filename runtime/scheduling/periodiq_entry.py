"""The `scheduler` process: periodiq is the clock, Ferry decides what is due.

    periodiq runtime.scheduling.periodiq_entry:boot

periodiq imports this module, calls `boot()` and then schedules the periodic actors of
the broker `boot` set (dramatiq's global broker). There is one: `ferry_tick`, every
minute, whose whole body is `Scheduler.fire_due()`.

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

Killing this process at any moment is safe: the next scheduler fires what it left.
"""

from __future__ import annotations

import sys
from typing import Any

import dramatiq
import structlog
from dramatiq.brokers.stub import StubBroker
from periodiq import cron

from runtime.app import Runtime
from runtime.errors import ConfigurationError, FerryError
from runtime.logs import configure_logging
from runtime.scheduling.scheduler import Scheduler
from runtime.settings import Settings

log = structlog.get_logger("ferry.scheduler")

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


class InlineBroker(StubBroker):
    """A broker that runs each message in the sending thread, as it is sent.

    periodiq's loop sends at most one tick at a time, so ticks never overlap; a tick
    that fails is logged and the next one (a minute later) covers its work.
    """

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        self.emit_before("enqueue", message, delay)
        actor = self.get_actor(message.actor_name)
        try:
            actor.fn(*message.args, **message.kwargs)
        except Exception as ex:
            log.error(
                "scheduler_tick_failed", error_type=type(ex).__name__, error=str(ex), exc_info=True
            )
        self.emit_after("enqueue", message, delay)
        return message


def build_clock_broker(scheduler: Scheduler) -> InlineBroker:
    """The broker periodiq drives: one periodic actor that fires what is due."""
    broker = InlineBroker(middleware=[PeriodicOption()])

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


def start(settings: Settings) -> InlineBroker:
    """Build the runtime and scheduler, register the schedules; the clock's broker."""
    runtime = Runtime(settings)
    if not runtime.store.is_current():
        raise ConfigurationError(
            "the store has not been migrated to the newest schema; run `ferry migrate`"
        )
    scheduler = Scheduler.from_runtime(runtime)
    scheduler.register()
    log.info("scheduler_started", schedules=scheduler.book.ids())
    return build_clock_broker(scheduler)


def boot() -> None:
    """periodiq's entry: read `FERRY_*`, set the clock's broker as dramatiq's broker.

    A bad setting, a bad schedule or an old schema stops start-up with one line naming
    it (exit code 2; an unreachable store: 1), before periodiq's own error handling can
    bury it in a traceback.
    """
    try:
        settings = Settings.from_env()
        configure_logging(settings)
        broker = start(settings)
    except FerryError as ex:  # a bad configuration, or the store is unreachable
        sys.stderr.write(f"ferry scheduler: {ex}\n")
        sys.stderr.flush()
        code = EXIT_BAD_CONFIGURATION if isinstance(ex, ConfigurationError) else 1
        raise SystemExit(code) from ex
    dramatiq.set_broker(broker)
