"""Celery 5 out of the box on its Redis broker: a no-op task and a timing probe.

Run with `python -m celery -A bench.reference.celery_app worker --pool threads
--concurrency 8 -Q bench`, one process per worker process the other systems get.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import redis
from celery import Celery
from celery.signals import worker_ready

QUEUE = "bench"
NAMESPACE = os.environ.get("BENCH_NAMESPACE", "ferry-bench-celery")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PROBE_KEY = f"{NAMESPACE}:probe-timings"
#: Every key Celery writes starts with this (kombu's `global_keyprefix`).
PREFIX = f"{NAMESPACE}:"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
_client = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.probe")
def probe(sent: float) -> None:
    started = time.time()
    finished = time.time()
    _client.rpush(PROBE_KEY, json.dumps([sent, started, finished]))


@worker_ready.connect
def _say_ready(**_kwargs: object) -> None:
    # The worker logs at WARNING (per-task INFO lines would slow it down); say this anyway.
    print("bench: celery worker ready", flush=True)


def send_call() -> Callable[[], None]:
    def call() -> None:
        noop.delay()

    return call


def pending() -> int:
    """Tasks still in the queue or delivered but not yet acknowledged."""
    return int(_client.llen(f"{PREFIX}{QUEUE}")) + int(_client.hlen(f"{PREFIX}unacked"))
