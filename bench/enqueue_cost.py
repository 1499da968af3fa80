"""What sending a batch of messages to Redis costs, per message (`enqueue_many`).

    python -m bench.enqueue_cost [--messages 1000] [--batches 20]

A batch accept (`POST .../invocations/batch`) and a fair-dispatch release send their
messages with `WakingRedisBroker.enqueue_many`: one round trip for the batch. This
sends `batches` batches of `messages` messages of one queue and prints this process's
CPU and Redis's CPU per message, and the wall time per batch. Run it at two commits to
compare them. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence

import dramatiq
import redis

from bench.__main__ import DEFAULT_REDIS
from bench.group_commit import server_cpu_s
from bench.infra import redis_namespace
from runtime.worker.redis_broker import WakingRedisBroker

QUEUE = "default"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enqueue_cost", description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args(argv)
    with redis_namespace(DEFAULT_REDIS) as namespace:
        broker = WakingRedisBroker(
            client=redis.Redis.from_url(DEFAULT_REDIS), namespace=namespace, middleware=[]
        )
        broker.declare_queue(QUEUE)
        actor = dramatiq.Actor(
            lambda invocation_id: None,
            broker=broker,
            actor_name="bench_noop",
            queue_name=QUEUE,
            priority=0,
            options={},
        )
        keys = [f"{namespace}:{QUEUE}", f"{namespace}:{QUEUE}.msgs", broker.wakeup_key(QUEUE)]
        cpu = redis_cpu = wall = 0.0
        for _ in range(args.batches):
            # Messages as the dispatcher builds them: an invocation id, its tenant in options.
            messages = [
                actor.message_with_options(
                    args=(str(uuid.uuid4()),), invocation_id="x", tenant_id="t-bench"
                )
                for _ in range(args.messages)
            ]
            redis0, cpu0, wall0 = (
                server_cpu_s("redis-server"),
                time.process_time(),
                time.perf_counter(),
            )
            broker.enqueue_many(messages)
            cpu += time.process_time() - cpu0
            wall += time.perf_counter() - wall0
            redis_cpu += server_cpu_s("redis-server") - redis0
            broker.client.delete(*keys)
        count = args.messages * args.batches
        print(
            f"enqueue_many, {args.messages} a batch: this process {cpu / count * 1e6:5.1f} us CPU, "
            f"Redis {redis_cpu / count * 1e6:5.1f} us CPU per message; "
            f"{wall / args.batches * 1e3:6.1f} ms wall per batch"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
