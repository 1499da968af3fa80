"""Gunicorn settings of Ferry's `web` process.

    gunicorn -c deploy/gunicorn.conf.py gateway.wsgi:app

Sizing (gthread workers): the gateway mostly waits on PostgreSQL and Redis, and
`?wait=S` holds a request for up to `FERRY_MAX_WAIT_S` seconds, so concurrency comes
from threads; processes add CPU for JSON and validation. Defaults: one process per core,
at least 2 so that one restarting process is not an outage (`WEB_CONCURRENCY`
overrides), and 8 threads per process (`GUNICORN_THREADS`). Each process has its own
SQLAlchemy pool: keep `FERRY_DB_POOL_SIZE + FERRY_DB_MAX_OVERFLOW` at or above the
threads, or busy threads wait `FERRY_DB_POOL_TIMEOUT_S` for a connection and answer 503.
Each thread that accepts also keeps one connection of its own for the accept's INSERT
(`runtime/store/kept.py`, at most `FERRY_DB_POOL_SIZE` per process). PostgreSQL sees
processes x (threads + the pool's connections in use) connections per web host.

`PORT`, `WEB_CONCURRENCY` and `GUNICORN_THREADS` are the conventions of Procfile runners
and Gunicorn, not Ferry settings; every `FERRY_*` value comes from `Settings`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gunicorn.glogging import Logger

from runtime.errors import ConfigurationError, SettingsInvalid
from runtime.logs import configure_logging
from runtime.metrics_dir import leave_metrics_dir, use_metrics_dir
from runtime.settings import Settings

try:
    _settings = Settings.from_env()
except SettingsInvalid as ex:
    # Refuse to start with a message naming the variable, before any worker forks.
    sys.exit(f"ferry web: {ex}")

bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, os.cpu_count() or 1)))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))

# A sync worker is killed when one request outlives `timeout`, so keep it above the
# longest `?wait` even though gthread workers only use it as a liveness heartbeat.
timeout = int(_settings.max_wait_s) + 30
# SIGTERM: stop accepting, let in-flight requests (the longest `?wait` included) finish.
graceful_timeout = int(max(_settings.max_wait_s, _settings.shutdown_grace_s)) + 5
keepalive = 5

# Not preloaded: each worker process imports `gateway.wsgi` after the fork and so builds
# its own runtime, SQLAlchemy engine and Redis pool. A preloaded app would share sockets
# opened in the master between processes.
preload_app = False

# Worker heartbeat files on tmpfs: a slow disk cannot make Gunicorn think workers hang.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# Gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl): two
# servers on one host would take it from each other, and Ferry does not use `gunicornc`.
control_socket_disable = True

# The gateway logs every request itself (JSON lines with the request id); Gunicorn's own
# access log would repeat them in another format.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level


class FerryLogger(Logger):
    """Gunicorn's own lines (boot, signals, worker exits) as Ferry's log lines.

    Gunicorn sets up its loggers before any hook runs, and again on each reload; this
    hands them to the root handler of `configure_logging`, so that from the first line
    ("Starting gunicorn") every line is JSON in `json` format, with the same redaction.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging(_settings)
        for logger in (self.error_log, self.access_log):
            logger.handlers[:] = []
            logger.propagate = True


logger_class = FerryLogger


def on_starting(server: Any) -> None:
    # The master joins FERRY_METRICS_DIR before any worker forks: it wipes what a previous
    # run left, and the workers inherit PROMETHEUS_MULTIPROC_DIR. While it lives, a
    # restarted worker keeps the others' counts.
    try:
        use_metrics_dir(_settings)
    except ConfigurationError as ex:
        sys.exit(f"ferry web: {ex}")
    pool = _settings.db_pool_size + _settings.db_max_overflow
    if threads > pool:
        server.log.warning(
            "GUNICORN_THREADS=%s exceeds FERRY_DB_POOL_SIZE + FERRY_DB_MAX_OVERFLOW=%s: "
            "threads will wait for database connections",
            threads,
            pool,
        )


def child_exit(server: Any, worker: Any) -> None:
    # The exited web process's live gauges leave the shared metrics directory; its counts stay.
    leave_metrics_dir(worker.pid)


def on_exit(server: Any) -> None:
    leave_metrics_dir(os.getpid())
