"""Claims and successes of 8 threads in one process, with and without group commit.

    python -m bench.group_commit [--count 2000] [--threads 8] [--ms 0 --ms 1 ...]

The store's side of the worker alone (issue 15, item 1): `count` invocations accepted in a
new PostgreSQL database, then `threads` threads of this process each claim one
(`Claims.claim`) and record its success (`Claims.succeed_alone`) until none is left, as
a worker's threads do with a no-op function, without the broker, fair dispatch or
logging. Printed per `FERRY_GROUP_COMMIT_MS` value: invocations per second, this
process's CPU and PostgreSQL's CPU (all its server processes) per invocation, and the
batches written. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from bench.__main__ import DEFAULT_PG, DEFAULT_REDIS
from bench.ferry_run import FUNCTION, FUNCTIONS_MODULE
from bench.infra import pg_database, redis_namespace
from runtime.app import Runtime
from runtime.settings import Settings
from runtime.store.claims import Claimed


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL server process on this machine so far."""
    return server_cpu_s("postgres")


def server_cpu_s(name: str) -> float:
    """CPU seconds so far of every process on this machine whose name starts with `name`."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if not comm.read().startswith(name):
                    continue
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def store_settings(database_url: str, namespace: str, **more: object) -> Settings:
    """The settings of a store-side benchmark: its database, no fair dispatch, quiet logs."""
    return Settings.from_env(
        database_url=database_url,
        broker_url=DEFAULT_REDIS,
        redis_namespace=namespace,
        secret_key=secrets.token_urlsafe(48),
        functions_module=FUNCTIONS_MODULE,
        fair_dispatch=False,
        log_level="error",
        **more,
    )


def run(database_url: str, namespace: str, ms: float, count: int, threads: int) -> str:
    settings = store_settings(database_url, namespace, group_commit_ms=ms)
    runtime = Runtime(settings)
    try:
        runtime.store.migrate()
        tenant = "t-bench"
        runtime.store.tenants.create(tenant)
        accept = runtime.invocations.accept
        ids = iter(
            [accept(tenant_id=tenant, function=FUNCTION, payload={})[0].id for _ in range(count)]
        )
        claims = runtime.store.claims
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    invocation_id = next(ids, None)
                if invocation_id is None:
                    return
                claimed = claims.claim(invocation_id, "bench-worker", 30)
                assert isinstance(claimed, Claimed)
                assert claims.succeed_alone(claimed, {})

        pg_before, cpu_before, start = postgres_cpu_s(), time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(work) for _ in range(threads)]:
                future.result()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        pg = postgres_cpu_s() - pg_before
        group = claims._group
        batches = f"{group.batches} batches of {group.requests}" if group else "no batches"
        return (
            f"FERRY_GROUP_COMMIT_MS={ms:g}: {count / wall:,.0f}/s, this process "
            f"{cpu / count * 1000:.2f} ms CPU per invocation, PostgreSQL "
            f"{pg / count * 1000:.2f} ms, {batches} requests, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ms", type=float, action="append", help="FERRY_GROUP_COMMIT_MS values")
    args = parser.parse_args(argv)
    windows = args.ms or [0.0, 1.0, 0.0, 1.0]
    logging.disable(logging.INFO)
    for ms in windows:
        with pg_database(DEFAULT_PG) as url, redis_namespace(DEFAULT_REDIS) as namespace:
            print(run(url, namespace, ms, args.count, args.threads), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
