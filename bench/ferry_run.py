"""Ferry's workloads: gunicorn with the production config, N `runtime.worker` processes.

1. accept: closed-loop POSTs through gunicorn (every 202 is a committed row), then a
   steady 200 requests/s for the accept latency; then closed-loop POSTs of 1,000 inputs
   each to the batch endpoint (`bench.batch_accept`); and, after the idle phase, the same
   closed loop against gunicorn and Falcon with nothing behind them (`bench.floor`);
2. drain: `invocations` no-ops accepted in bulk through the runtime's `InvocationService` while
   no worker runs, then the worker processes start; the rate is the count over the
   store's own window, first `started_at` to last `finished_at`;
3. idle: one invocation at a time over HTTP, with a pause, on idle workers; latencies
   from the store's `created_at`, `started_at` and `finished_at`.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import secrets
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import batch_accept, floor, loadgen, profiles
from bench.infra import (
    PYTHON,
    CpuMeter,
    Processes,
    child_env,
    free_port,
    processes,
    start_gunicorn,
    wait_for,
)
from bench.plan import Plan
from bench.report import percentile
from runtime.app import Runtime
from runtime.logs import configure_logging
from runtime.settings import Settings
from runtime.store.models import UNFINISHED_SQL
from runtime.store.tenants import parse_scopes

FUNCTION = "bench_noop"
FUNCTIONS_MODULE = "functions,bench.functions"
TENANT = "bench"


class FerryDeployment:
    """One database and one Redis namespace, and the settings every Ferry process gets."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        namespace: str,
        log_dir: Path,
        overrides: dict[str, str] | None = None,
    ):
        self.values: dict[str, Any] = {
            "database_url": database_url,
            "broker_url": redis_url,
            "redis_namespace": namespace,
            "functions_module": FUNCTIONS_MODULE,
            # Production mode refuses a default secret; each run makes its own.
            "secret_key": secrets.token_urlsafe(48),
            # `--ferry NAME=VALUE`: settings under test (e.g. redis_consumer_wakeup=true).
            **(overrides or {}),
        }
        self.log_dir = log_dir

    def env(self, **more: Any) -> dict[str, str]:
        ferry = {f"FERRY_{k.upper()}": v for k, v in {**self.values, **more}.items()}
        return child_env(**ferry)

    def runtime(self, **more: Any) -> Runtime:
        settings = Settings.from_env(**{**self.values, **more}, log_level="warning")
        configure_logging(settings)  # the benchmark's own process logs warnings only
        return Runtime(settings)


def _gunicorn(procs: Processes, deployment: FerryDeployment, port: int) -> None:
    start_gunicorn(procs, "gunicorn", "gateway.wsgi:app", deployment.env(), port)


def start_workers(
    procs: Processes, deployment: FerryDeployment, plan: Plan, *, name: str = "", **settings: Any
) -> list[Any]:
    """The plan's worker processes, with `settings` besides the deployment's."""
    started = []
    for n in range(plan.processes):
        argv = [
            PYTHON,
            "-m",
            "runtime.worker",
            "--queues",
            "default,scheduled",
            "--threads",
            str(plan.threads),
        ]
        label = f"ferry-worker-{name}-{n + 1}" if name else f"ferry-worker-{n + 1}"
        started.append(procs.start(label, argv, deployment.env(**settings)))
    for proc in started:
        proc.wait_for_output('"worker_started"')
    return started


def clear(runtime: Runtime) -> None:
    """Forget the accept phase's invocations: from the store and from the Redis queues."""
    with runtime.store.db.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE invocations, attempts CASCADE"))
    runtime.broker.flush_all()


def _bulk_accept(runtime: Runtime, count: int, threads: int = 8) -> float:
    """Accept `count` no-ops through the Dispatcher from `threads` threads; the rate."""
    next_index = iter(range(count))
    lock = threading.Lock()

    def work() -> int:
        done = 0
        while True:
            with lock:
                n = next(next_index, None)
            if n is None:
                return done
            runtime.invocations.accept(
                tenant_id=TENANT, function=FUNCTION, payload={}, trigger="cli"
            )
            done += 1

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: work(), range(threads)))
    return total / (time.perf_counter() - started)


def _status_counts(runtime: Runtime) -> dict[str, int]:
    return runtime.store.invocations.counts_by_status()


def _seq_rows_read(runtime: Runtime) -> dict[str, int]:
    """Rows PostgreSQL has read by sequential scans so far, per table of the hot path."""
    with runtime.store.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT relname, seq_tup_read FROM pg_stat_user_tables "
                "WHERE relname IN ('invocations', 'attempts', 'tenants')"
            )
        )
        return {row.relname: int(row.seq_tup_read) for row in rows}


def _seq_rows_since(runtime: Runtime, before: dict[str, int]) -> dict[str, int]:
    # Statistics reach pg_stat_user_tables within PostgreSQL's stats interval: read late.
    time.sleep(1.0)
    return {table: n - before.get(table, 0) for table, n in _seq_rows_read(runtime).items()}


def drain(runtime: Runtime, count: int, timeout_s: float) -> dict[str, Any]:
    """Wait until the `count` invocations already stored have finished; the figures.

    The wait counts only the unfinished rows, through their partial index, so that the
    benchmark's own polling does not read the whole table four times a second (1.3
    million rows in a 20,000-invocation drain, charged to Ferry's PostgreSQL CPU).
    """

    def finished() -> bool:
        with runtime.store.db.engine.connect() as conn:
            left = conn.execute(sa.text(f"SELECT count(*) FROM invocations WHERE {UNFINISHED_SQL}"))
            return left.scalar_one() == 0

    wait_for(finished, timeout=timeout_s, interval=0.25, what=f"{count} invocations to finish")
    with runtime.store.db.engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT min(started_at) AS first, max(finished_at) AS last, count(*) AS n, "
                "sum(attempts) AS attempts FROM invocations WHERE status = 'succeeded'"
            )
        ).one()
    window = (row.last - row.first).total_seconds()
    return {
        "succeeded": int(row.n),
        "attempts": int(row.attempts),
        "statuses": _status_counts(runtime),
        "window_s": window,
        "rate": int(row.n) / window,
    }


def _queue_empty(runtime: Runtime, deployment: FerryDeployment, timeout_s: float) -> float:
    """Wait until Redis holds no message of the default queue; how long that took."""
    client: Any = getattr(runtime.broker, "client", None)
    key = f"{deployment.values['redis_namespace']}:default.msgs"
    started = time.monotonic()
    if client is not None:
        wait_for(lambda: client.hlen(key) == 0, timeout=timeout_s, what="an empty queue")
    return time.monotonic() - started


def _idle_latency(base_url: str, key: str, runtime: Runtime, plan: Plan) -> dict[str, Any]:
    call_url = f"{base_url}/v1/functions/{FUNCTION}/invocations?wait=5"
    ids = []
    for _ in range(plan.idle_samples):
        time.sleep(random.uniform(*plan.idle_pause_s))
        request = urllib.request.Request(
            call_url,
            data=b"{}",
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            ids.append(json.loads(response.read())["id"])
    with runtime.store.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT created_at, started_at, finished_at FROM invocations WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        ).all()
    start = [(r.started_at - r.created_at).total_seconds() * 1000 for r in rows if r.started_at]
    finish = [(r.finished_at - r.created_at).total_seconds() * 1000 for r in rows if r.finished_at]
    return {"samples": len(ids), "start_ms": start, "finish_ms": finish}


def run(
    deployment: FerryDeployment,
    plan: Plan,
    *,
    profile_dir: Path | None,
    say: Any,
    fairness_only: bool = False,
) -> dict[str, Any]:
    """Every Ferry workload (or only the fairness rows); the figures and the details."""
    from bench import fairness

    if fairness_only:
        return fairness.run(deployment, plan, say=say)
    runtime = deployment.runtime()
    runtime.store.migrate()
    runtime.store.tenants.create(TENANT)
    _view, key = runtime.store.tenants.create_key(TENANT, parse_scopes("invoke,read"))
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    invoke_url = f"{base_url}/v1/functions/{FUNCTION}/invocations"
    try:
        with processes(deployment.log_dir) as procs:
            _gunicorn(procs, deployment, port)
            say("ferry: gunicorn up; warming up")
            loadgen.closed_loop_http(
                invoke_url, key, "{}", connections=plan.connections, duration_s=plan.warmup_s
            )
            profiler = None
            if profile_dir is not None:
                raw = profile_dir / "gateway-accept.raw"
                profiler = profiles.record(
                    procs.started[0].pid, plan.accept_s, raw, subprocesses=True
                )
            say(f"ferry: closed-loop accept for {plan.accept_s:.0f}s")
            accept = loadgen.closed_loop_http_cpu(
                invoke_url,
                key,
                "{}",
                connections=plan.connections,
                duration_s=plan.accept_s,
                server_pid=procs.started[0].pid,
            )
            if profile_dir is not None:
                profiles.finish(profiler, profile_dir / "gateway-accept.raw")
            stored = _status_counts(runtime)
            accept["stored_rows"] = sum(stored.values())
            figures["accept_rate"] = accept["rate"]
            figures["accept_cpu_ms"] = accept["cpu_ms_per_request"].get("gateway")
            details["accept"] = accept
            say(f"ferry: {plan.rate}/s open loop for {plan.paced_s:.0f}s")
            spec: loadgen.CallFactorySpec = (
                "bench.loadgen:http_post_call",
                {"url": invoke_url, "key": key, "body": "{}"},
            )
            paced = loadgen.paced(spec, rate=plan.rate, duration_s=plan.paced_s)
            figures["accept_p50_ms"] = percentile(paced["latencies_ms"], 50)
            figures["accept_p99_ms"] = percentile(paced["latencies_ms"], 99)
            details["paced"] = {k: v for k, v in paced.items() if k != "latencies_ms"}
            details["paced"]["max_ms"] = max(paced["latencies_ms"], default=None)

            say(f"ferry: batch accept, {batch_accept.BATCH} per POST, for {plan.accept_s:.0f}s")
            batch_figures, details["batch_accept"] = batch_accept.run(
                runtime, procs.started[0].pid, base_url, key, FUNCTION, plan
            )
            figures.update(batch_figures)

            clear(runtime)
            say(f"ferry: accepting {plan.invocations} no-ops through the InvocationService")
            details["bulk_accept_rate"] = _bulk_accept(runtime, plan.invocations)
            say(f"ferry: draining with {plan.processes} x {plan.threads} workers")
            workers = start_workers(procs, deployment, plan)
            recordings = []
            if profile_dir is not None:
                # Long enough for most of a drain at a few hundred per second.
                seconds = min(30.0, plan.invocations / 400)
                for n, worker in enumerate(workers):
                    raw = profile_dir / f"worker-{n + 1}-drain.raw"
                    recordings.append((profiles.record(worker.pid, seconds, raw), raw))
            # A plan that reads a whole table per statement shows here before anywhere else.
            scanned_before = _seq_rows_read(runtime)
            with CpuMeter({"workers": [w.pid for w in workers]}) as cpu:
                drained = drain(runtime, plan.invocations, plan.drain_timeout_s)
            drained["seq_rows_read"] = _seq_rows_since(runtime, scanned_before)
            drained["cpu_s"] = cpu.used
            drained["cpu_ms_per_invocation"] = cpu.per_item_ms(plan.invocations)
            for recording, raw in recordings:
                profiles.finish(recording, raw)
            figures["e2e_rate"] = drained["rate"]
            figures["e2e_cpu_ms"] = drained["cpu_ms_per_invocation"].get("workers")
            figures["e2e_postgres_cpu_ms"] = drained["cpu_ms_per_invocation"].get("postgres")
            details["drain"] = drained

            say(f"ferry: {plan.idle_samples} single invocations on idle workers")
            details["queue_empty_after_s"] = _queue_empty(runtime, deployment, timeout_s=120)
            time.sleep(2)
            idle = _idle_latency(base_url, key, runtime, plan)
            figures["idle_start_p50_ms"] = percentile(idle["start_ms"], 50)
            figures["idle_start_p99_ms"] = percentile(idle["start_ms"], 99)
            figures["idle_finish_p50_ms"] = percentile(idle["finish_ms"], 50)
            figures["idle_finish_p99_ms"] = percentile(idle["finish_ms"], 99)
            details["idle"] = {
                "samples": idle["samples"],
                "start_max_ms": max(idle["start_ms"], default=None),
                "finish_max_ms": max(idle["finish_ms"], default=None),
            }
    finally:
        runtime.close()
    floor_figures, details["floor"] = floor.run(deployment, plan, say=say)
    figures.update(floor_figures)
    say("ferry: fair dispatch on and off, one tenant and ten")
    fair = fairness.run(deployment, plan, say=say)
    figures.update(fair["figures"])
    details["fairness"] = fair["details"]
    return {"figures": figures, "details": details}
