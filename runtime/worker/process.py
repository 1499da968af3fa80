"""The worker process: consume queues until SIGTERM, then drain and exit 0.

`python -m runtime.worker --queues default,scheduled --threads 8` (or `ferry worker`).

Shutdown, as Dramatiq's `Worker.stop` does it on the Redis broker:

- worker threads stop taking messages and finish the one they run (actors are not
  interrupted: `ShutdownNotifications` defaults to `notify_shutdown=False`), within
  `FERRY_SHUTDOWN_GRACE_S`;
- messages prefetched into the in-memory work queue are pushed back onto their Redis queue;
- messages still in a consumer's fetch cache stay in this process's Redis ack set;
- an attempt still running when the grace runs out is given up: its lease ends at once
  (`LeaseKeeper.release_all`), so the next sweep of another process runs it again.

Nothing of that is lost: the invocation stays `queued` (the sweep sends it again after
`FERRY_REDISPATCH_AFTER_S`) or is taken back from `running` by the sweep, and a late
duplicate delivery is skipped by the claim. After a second signal the process leaves at
once and its leases lapse within `FERRY_LEASE_S`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from wsgiref.simple_server import WSGIServer

import structlog

from runtime.app import Runtime
from runtime.errors import ConfigurationError
from runtime.logs import configure_logging
from runtime.metrics import mark_process_dead, start_metrics_server
from runtime.settings import Settings

log = structlog.get_logger("ferry.worker")

DEFAULT_QUEUES = ("default", "scheduled")
#: Exit code of a second signal: the conventional 128 + signal number is added to it.
_SIGNAL_EXIT_BASE = 128


class ShutdownSignals:
    """First SIGTERM/SIGINT asks for a graceful stop; a second one exits at once."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            # The operator insists: leave now. Running attempts are recovered elsewhere
            # when their leases lapse (within FERRY_LEASE_S).
            sys.stderr.write(f"ferry worker: second {signal.Signals(signum).name}, exiting now\n")
            sys.stderr.flush()
            os._exit(_SIGNAL_EXIT_BASE + signum)
        self.requested.set()

    def wait(self) -> None:
        # A timed wait keeps the main thread returning to the interpreter, where signal
        # handlers run.
        while not self.requested.wait(timeout=1.0):
            pass


def parse_queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    if not queues:
        raise ConfigurationError("--queues needs at least one queue name")
    return queues


def run_worker(
    settings: Settings,
    *,
    queues: Sequence[str] | None = None,
    threads: int | None = None,
    signals: ShutdownSignals | None = None,
    metrics_port: int | None = None,
) -> int:
    """Run a worker process until a signal stops it; its exit code.

    `queues` defaults to `default` and `scheduled`; `threads` to `FERRY_WORKER_THREADS`;
    `metrics_port` (serve the process's metrics) to `FERRY_METRICS_PORT`.
    Installs SIGTERM/SIGINT handlers, so call it from the main thread.
    """
    configure_logging(settings)
    signals = signals or ShutdownSignals()
    signals.install()
    chosen = list(queues or DEFAULT_QUEUES)
    try:
        runtime = Runtime(settings)
    except ConfigurationError as ex:
        log.error("worker_start_failed", error_type=type(ex).__name__, error=str(ex))
        return 2
    metrics_server: WSGIServer | None = None
    try:
        unknown = set(chosen) - runtime.broker.get_declared_queues()
        if unknown:
            # A worker on a misspelt queue would idle forever without a word.
            log.error(
                "worker_start_failed",
                error="unknown queues",
                queues=sorted(unknown),
                known=sorted(runtime.broker.get_declared_queues()),
            )
            return 2
        port = metrics_port or settings.metrics_port
        metrics_server = start_metrics_server(port) if port else None
        handle = runtime.start_worker(queues=chosen, threads=threads)
        log.info(
            "worker_started",
            pid=os.getpid(),
            worker_id=runtime.worker_id,
            queues=chosen,
            threads=threads or settings.worker_threads,
        )
        signals.wait()
        log.info("worker_stopping", pid=os.getpid(), grace_s=settings.shutdown_grace_s)
        abandoned = handle.stop(settings.shutdown_grace_s)
        if abandoned:
            log.warning(
                "worker_stopped_with_running_attempts",
                threads=abandoned,
                recovery="their claims are released and another worker runs them",
            )
        log.info("worker_stopped", pid=os.getpid())
        return 0
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        runtime.close()
        # Its live gauges leave the shared metrics directory; its counts stay.
        mark_process_dead(os.getpid())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferry worker", description="Run Ferry functions from the given queues."
    )
    parser.add_argument(
        "--queues",
        default=",".join(DEFAULT_QUEUES),
        help="comma-separated queues to consume (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="worker threads (default: FERRY_WORKER_THREADS)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        settings = Settings.from_env()
        queues = parse_queues(args.queues)
    except ConfigurationError as ex:
        sys.stderr.write(f"ferry worker: {ex}\n")
        return 2
    return run_worker(settings, queues=queues, threads=args.threads)


if __name__ == "__main__":
    sys.exit(main())
