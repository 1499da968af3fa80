"""Raw Dramatiq out of the box: a no-op actor and a timing probe on its RedisBroker.

No store, no gateway, Dramatiq's default middleware and worker settings; run with
`python -m dramatiq bench.reference.dramatiq_app --processes 2 --threads 8`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench"
NAMESPACE = os.environ.get("BENCH_NAMESPACE", "ferry-bench-dramatiq")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Where the probe actor writes its timings, one JSON list per run.
PROBE_KEY = f"{NAMESPACE}:probe-timings"

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
dramatiq.set_broker(broker)


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
def noop() -> None:
    return None


@dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
def probe(sent: float) -> None:
    started = time.time()
    finished = time.time()
    broker.client.rpush(PROBE_KEY, json.dumps([sent, started, finished]))


def send_call() -> Callable[[], None]:
    """One enqueue of the no-op (the load generator's unit)."""

    def call() -> None:
        noop.send()

    return call


def pending() -> int:
    """Messages enqueued and not yet acknowledged (Dramatiq deletes them on ack)."""
    return int(broker.client.hlen(f"{NAMESPACE}:{QUEUE}.msgs"))
