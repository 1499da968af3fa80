"""One tenant's `?wait` requests against another tenant's reads (issue 12, item 7).

    python -m bench.waits [--hogs 50] [--seconds 20] [--no-cap]

Gunicorn with `deploy/gunicorn.conf.py` (2 processes x 8 threads), PostgreSQL and Redis on
127.0.0.1, no worker running (so no invocation finishes). Tenant `hog` keeps `--hogs`
requests `POST ...?delay=3600&wait=30` in flight: each thread sends one, and when it is
answered sends the next after a second (a client polling at 1 Hz). Meanwhile tenant
`victim` sends `GET /v1/invocations?limit=1` one after another and the latencies are
printed: p50, p99, max, and any answer that was not a 200. A baseline without the hog
comes first. `--no-cap` lifts the wait caps (`FERRY_MAX_WAITS_PER_*` = 1000) to show the
behaviour before them. Loopback only; it creates its own database and Redis namespace
and removes them at the end. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from bench.__main__ import DEFAULT_PG, DEFAULT_REDIS
from bench.ferry_run import FUNCTION, FerryDeployment, _gunicorn
from bench.infra import free_port, pg_database, processes, redis_namespace
from bench.report import percentile
from runtime.store.tenants import parse_scopes

WAIT_S = 30
NO_CAP = {"max_waits_per_tenant": "1000", "max_waits_per_process": "1000"}


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Hog:
    """`count` threads, each keeping one `?wait` request of the hog tenant in flight."""

    def __init__(self, base_url: str, key: str, count: int) -> None:
        self.url = f"{base_url}/v1/functions/{FUNCTION}/invocations"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.count = count
        self.stop = threading.Event()
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                answer = session.post(
                    self.url,
                    json={},
                    headers=self.headers,
                    params={"delay": "3600", "wait": str(WAIT_S)},
                    timeout=WAIT_S + 30,
                )
                status = answer.status_code
            except requests.RequestException:
                status = 0
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            self.stop.wait(1.0)

    def __enter__(self) -> Hog:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()


def measure_reads(base_url: str, key: str, seconds: float) -> dict[str, Any]:
    """GET /v1/invocations?limit=1 back to back for `seconds`; latencies in ms."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            answer = session.get(
                f"{base_url}/v1/invocations", params={"limit": "1"}, headers=headers, timeout=60
            )
            outcome = str(answer.status_code)
        except requests.RequestException as ex:
            outcome = type(ex).__name__
        latencies.append((time.perf_counter() - started) * 1000)
        if outcome != "200":
            errors[outcome] = errors.get(outcome, 0) + 1
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "p50_ms": percentile(ordered, 50) or 0.0,
        "p99_ms": percentile(ordered, 99) or 0.0,
        "max_ms": ordered[-1] if ordered else 0.0,
        "not_200": errors,
    }


def _line(label: str, figures: dict[str, Any]) -> str:
    return (
        f"{label:<34} {figures['requests']:>6} GETs  p50 {figures['p50_ms']:7.1f} ms  "
        f"p99 {figures['p99_ms']:7.1f} ms  max {figures['max_ms']:8.1f} ms  "
        f"not 200: {figures['not_200'] or 'none'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.waits", description=__doc__)
    parser.add_argument("--hogs", type=int, default=50, help="the hog's requests in flight")
    parser.add_argument("--seconds", type=float, default=20.0, help="each phase's length")
    parser.add_argument("--no-cap", action="store_true", help="lift FERRY_MAX_WAITS_PER_*")
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    args = parser.parse_args(argv)
    if not 1 <= args.hogs <= 200 or not 1 <= args.seconds <= 120:
        parser.error("--hogs must be 1 to 200 and --seconds 1 to 120")

    # The production config's shape of the audit: 2 processes x 8 threads.
    os.environ["WEB_CONCURRENCY"], os.environ["GUNICORN_THREADS"] = "2", "8"
    log_dir = Path(tempfile.mkdtemp(prefix="ferry-bench-waits-"))
    with pg_database(args.pg) as database_url, redis_namespace(args.redis) as namespace:
        deployment = FerryDeployment(
            database_url, args.redis, namespace, log_dir, NO_CAP if args.no_cap else None
        )
        runtime = deployment.runtime()
        runtime.store.migrate()
        keys = {}
        for tenant in ("hog", "victim"):
            runtime.store.tenants.create(tenant)
            _view, keys[tenant] = runtime.store.tenants.create_key(
                tenant, parse_scopes("invoke,read")
            )
        runtime.close()
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with processes(log_dir) as procs:
            deployment.values |= {"log_level": "warning"}
            _gunicorn(procs, deployment, port)
            _say(f"gunicorn up (2 x 8 threads); baseline for {args.seconds:g} s")
            measure_reads(base_url, keys["victim"], 2)  # warm-up: connections, key cache
            baseline = measure_reads(base_url, keys["victim"], args.seconds)
            _say(f"the hog holds {args.hogs} ?wait={WAIT_S} requests; {args.seconds:g} s")
            with Hog(base_url, keys["hog"], args.hogs) as hog:
                time.sleep(2)  # every hog request sent once
                loaded = measure_reads(base_url, keys["victim"], args.seconds)
            hog_statuses = dict(sorted(hog.statuses.items()))
            _say("stopping gunicorn (held waits end with it)")
    caps = "no caps" if args.no_cap else "FERRY_MAX_WAITS_PER_TENANT=4, per process 4"
    print(f"victim GET /v1/invocations?limit=1 over loopback; {caps}")
    print(_line("baseline", baseline))
    print(_line(f"while the hog holds {args.hogs} waits", loaded))
    print(f"hog answers by status (so far): {hog_statuses}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
