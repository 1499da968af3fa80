"""Accept latency while retention removes a million expired invocations, on PostgreSQL.

    python -m bench.retention                  # about 6 minutes on 2 cores
    python -m bench.retention --rows 200000    # shorter

A script, not a test: it runs once, on loopback, for a bounded time (`--max-s`). It
creates its own database (`ferry_bench_<random>`) and Redis key prefix and removes both
at the end.

1. seed: `--rows` finished invocations that expired eight to ten days ago (80 %
   succeeded, 15 % failed, 5 % cancelled, each run one with its attempt) and `--kept`
   that finished within the hour and are kept, written with `generate_series`; then
   `VACUUM ANALYZE`;
2. gunicorn with `deploy/gunicorn.conf.py`; no worker runs, so accepted invocations stay
   queued and the only other load on the store is the removal;
3. `--rate` POSTs per second, each timed from when it was due (`bench.loadgen.paced`),
   in windows of `--window-s` that take turns: removal on, removal off. While on, one
   process calls `RetentionSweep` (the sweep's own code, `--batch-size`, its 0.5 s
   budget) back to back: more than one worker's sweep does, which spends at most 0.5 s
   of each `FERRY_SWEEP_INTERVAL_S` + 0.5 s. Taking turns puts both sides under the same
   background load, which matters on a machine shared with other work. It stops when
   every expired row is gone (and one last window without removal).

Each request's latency counts on the side of the window it was due in; rows/s is the
rows removed over the time spent removing. The figures go to stdout, the details to
`bench-retention.json` (`--out`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import loadgen
from bench.ferry_run import FUNCTION, TENANT, FerryDeployment, _gunicorn
from bench.infra import CpuMeter, free_port, pg_database, processes, redis_namespace
from bench.report import percentile
from runtime.recovery.retention import RetentionSweep
from runtime.settings import Settings
from runtime.store import Store
from runtime.store.retention import RetentionPolicy
from runtime.store.tenants import parse_scopes

#: One generated invocation per row of `generate_series(:lo, :hi)`, and its attempt (none
#: for a cancelled one). `:finished` is when the newest finished, each older one 0.2 s
#: before the next, so their times are spread like a steady stream's.
SEED = """
WITH made AS (
    INSERT INTO invocations (id, tenant_id, function, queue, status, trigger,
        idempotency_key, request_hash, payload, result, error, attempts, max_retries,
        budget_start, created_at, started_at, finished_at, dispatched_at, worker_id)
    SELECT md5(:salt || g)::uuid::text, :tenant, :function, 'default', s.status, 'http',
        'seed-' || :salt || g, repeat('0', 64), '{}'::json,
        CASE s.status WHEN 'succeeded' THEN '{"ok": true}'::json END,
        CASE s.status WHEN 'failed' THEN '{"type": "Boom", "message": "seeded"}'::json END,
        CASE s.status WHEN 'cancelled' THEN 0 ELSE 1 END, 3, 0,
        t.at - interval '50 ms',
        CASE WHEN s.status <> 'cancelled' THEN t.at - interval '20 ms' END,
        t.at, t.at - interval '50 ms', 'seed'
    FROM generate_series(CAST(:lo AS int), CAST(:hi AS int)) AS g,
        LATERAL (SELECT CAST(:finished AS timestamptz)
            - (CAST(:hi AS int) - g) * interval '200 ms' AS at) t,
        LATERAL (SELECT CASE WHEN g % 20 = 0 THEN 'cancelled' WHEN g % 20 < 4 THEN 'failed'
                        ELSE 'succeeded' END AS status) s
    RETURNING id, tenant_id, status, started_at, finished_at, error
)
INSERT INTO attempts (invocation_id, tenant_id, number, worker_id, started_at, finished_at,
    outcome, error)
SELECT id, tenant_id, 1, 'seed', started_at, finished_at, status, error
FROM made WHERE status <> 'cancelled'
"""
CHUNK = 100_000


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def seed(engine: sa.Engine, *, rows: int, finished: datetime, salt: str) -> float:
    """Insert `rows` finished invocations (and their attempts), the newest at `finished`."""
    started = time.perf_counter()
    for lo in range(1, rows + 1, CHUNK):
        hi = min(rows, lo + CHUNK - 1)
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # Ferry's is 15 s
            conn.execute(
                sa.text(SEED),
                {
                    "salt": f"{salt}-{lo}-",
                    "tenant": TENANT,
                    "function": FUNCTION,
                    "lo": lo,
                    "hi": hi,
                    "finished": finished - timedelta(seconds=(rows - hi) * 0.2),
                },
            )
    return time.perf_counter() - started


def remover(
    database_url: str, batch_size: int, pause_s: float, go: Any, paused: Any, out: Any
) -> None:
    """In a child process: remove expired invocations while `go` is set, until none is left.

    Says `ready` on `out` once started (its imports are not measured), sets `paused`
    whenever it waits for `go`, and puts its figures on `out` at the end.
    """
    settings = Settings.from_env(database_url=database_url, log_level="warning")
    store = Store.from_settings(settings)
    store.db.ping()
    batches: list[float] = []
    remove = store.retention.remove

    def timed(*args: Any, **kwargs: Any) -> int:
        began = time.perf_counter()
        count = remove(*args, **kwargs)
        batches.append((time.perf_counter() - began) * 1000)
        return count

    store.retention.remove = timed  # type: ignore[method-assign]
    retention = RetentionSweep(
        store, RetentionPolicy.from_settings(settings), interval_s=0, batch_size=batch_size
    )
    removed, busy_s = 0, 0.0
    out.put("ready")
    while True:
        if not go.is_set():
            paused.set()
            go.wait()
            paused.clear()
        began = time.perf_counter()
        count = retention()
        busy_s += time.perf_counter() - began
        removed += count
        if count == 0:  # a run that was not cut short left nothing expired
            break
        time.sleep(pause_s)
    store.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put(
        {
            "removed": removed,
            "busy_s": busy_s,
            "batch_ms": batches,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
    )


def latency(values: list[float], errors: int) -> dict[str, Any]:
    return {
        "requests": len(values),
        "errors": errors,
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values, default=None),
    }


class WaitSampler:
    """What the gateway's accepts wait on in PostgreSQL, sampled every 20 ms in a thread.

    Counts `wait_event_type:wait_event` (`CPU` when none) of active INSERTs into
    `invocations`; a `Lock:...` count would mean an accept waited for a row or table lock.
    """

    def __init__(self, engine: sa.Engine, database: str) -> None:
        self.engine = engine
        self.database = database
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = (
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity "
            "WHERE datname = %s AND state = 'active' AND query LIKE 'INSERT INTO invocations%%'"
        )
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self._stop.is_set():
                for (event,) in conn.exec_driver_sql(query, (self.database,)):
                    self.counts[event] = self.counts.get(event, 0) + 1
                time.sleep(0.02)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wal_position(engine: sa.Engine) -> int:
    """PostgreSQL's current WAL position, in bytes."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").scalar_one())


def table_sizes(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) AS bytes, "
                "last_autovacuum FROM pg_stat_user_tables "
                "WHERE relname IN ('invocations', 'attempts') ORDER BY relname"
            )
        ).all()
    return {
        r.relname: {
            "live": r.n_live_tup,
            "dead": r.n_dead_tup,
            "mb": round(r.bytes / 2**20, 1),
            "last_autovacuum": r.last_autovacuum and r.last_autovacuum.isoformat(),
        }
        for r in rows
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="ferry-bench-retention-"))
    with pg_database(args.pg) as database_url, redis_namespace(args.redis) as namespace:
        deployment = FerryDeployment(database_url, args.redis, namespace, log_dir)
        runtime = deployment.runtime()
        try:
            return measure(args, deployment, runtime, database_url)
        finally:
            runtime.close()


def measure(
    args: argparse.Namespace, deployment: FerryDeployment, runtime: Any, database_url: str
) -> dict[str, Any]:
    runtime.store.migrate()
    runtime.store.tenants.create(TENANT)
    _view, key = runtime.store.tenants.create_key(TENANT, parse_scopes("invoke,read"))
    engine = runtime.store.db.engine
    now = datetime.now(UTC)
    say(f"seeding {args.rows:,} expired and {args.kept:,} kept finished invocations")
    # Older than every default retention (a week for failed and cancelled ones).
    seed_s = seed(engine, rows=args.rows, finished=now - timedelta(days=8), salt="old")
    seed_s += seed(engine, rows=args.kept, finished=now, salt="new")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET statement_timeout = 0")
        conn.exec_driver_sql("VACUUM ANALYZE invocations")
        conn.exec_driver_sql("VACUUM ANALYZE attempts")
        conn.exec_driver_sql("RESET statement_timeout")
    result: dict[str, Any] = {
        "rows": args.rows,
        "kept": args.kept,
        "rate": args.rate,
        "batch_size": args.batch_size,
        "seed_s": round(seed_s, 1),
        "tables_before": table_sizes(engine),
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/functions/{FUNCTION}/invocations"
    spec: loadgen.CallFactorySpec = (
        "bench.loadgen:http_post_call",
        {"url": url, "key": key, "body": "{}"},
    )
    with processes(deployment.log_dir) as procs:
        _gunicorn(procs, deployment, port)
        gateway = procs.started[0].pid
        say("gunicorn up; warming up")
        loadgen.paced(spec, rate=args.rate, duration_s=5)
        ctx = multiprocessing.get_context("spawn")
        out, go, paused = ctx.Queue(), ctx.Event(), ctx.Event()
        child = ctx.Process(
            target=remover, args=(database_url, args.batch_size, args.pause_s, go, paused, out)
        )
        child.start()
        if out.get(timeout=120) != "ready":
            raise RuntimeError("the remover did not start")
        latencies: dict[str, list[float]] = {"on": [], "off": []}
        errors = {"on": 0, "off": 0}
        windows = 0
        deadline = time.monotonic() + args.max_s
        say(f"{args.rate}/s in {args.window_s:.0f}s windows, removal on and off by turns")
        cpu_by_side: dict[str, dict[str, float]] = {"on": {}, "off": {}}
        waits_by_side: dict[str, dict[str, int]] = {"on": {}, "off": {}}
        database = database_url.rsplit("/", 1)[1]
        wal_by_side = {"on": 0, "off": 0}
        with CpuMeter({"gateway": [gateway]}) as cpu:
            while time.monotonic() < deadline:
                side = "off" if windows % 2 else "on"
                if side == "on" and not child.is_alive():
                    break  # everything was removed; the last window was without
                if side == "on":
                    go.set()
                else:
                    go.clear()
                    paused.wait(timeout=30)  # the batch under way ends first
                wal_before = wal_position(engine)
                with (
                    CpuMeter({"gateway": [gateway]}) as window_cpu,
                    WaitSampler(engine, database) as waits,
                ):
                    chunk = loadgen.paced(spec, rate=args.rate, duration_s=args.window_s)
                for event, count in waits.counts.items():
                    waits_by_side[side][event] = waits_by_side[side].get(event, 0) + count
                wal_by_side[side] += wal_position(engine) - wal_before
                for part, seconds in window_cpu.used.items():
                    cpu_by_side[side][part] = cpu_by_side[side].get(part, 0.0) + seconds
                latencies[side].extend(chunk["latencies_ms"])
                errors[side] += chunk["errors"]
                windows += 1
            go.set()
            removal = out.get(timeout=args.max_s)
            child.join(timeout=30)
        batch_ms = removal["batch_ms"]
        result["windows"] = windows
        result["cpu_s"] = cpu.used
        for side in ("off", "on"):
            result[f"removal_{side}"] = latency(latencies[side], errors[side]) | {
                "cpu_s": {k: round(v, 1) for k, v in cpu_by_side[side].items()},
                "wal_mb": round(wal_by_side[side] / 2**20, 1),
                "accept_waits": dict(sorted(waits_by_side[side].items(), key=lambda kv: -kv[1])),
            }
        rows = max(1, removal["removed"])
        extra_pg_s = cpu_by_side["on"].get("postgres", 0) - cpu_by_side["off"].get("postgres", 0)
        result["removal"] = {
            "removed": removal["removed"],
            "busy_s": round(removal["busy_s"], 1),
            "rows_per_s": round(removal["removed"] / max(1e-9, removal["busy_s"])),
            "batches": len(batch_ms),
            "batch_p50_ms": percentile(batch_ms, 50),
            "batch_p99_ms": percentile(batch_ms, 99),
            "batch_max_ms": max(batch_ms, default=None),
            # The remover's own CPU; it also counts under `load generator` in `cpu_s`.
            "remover_cpu_s": round(removal["cpu_s"], 1),
            # What removing costs PostgreSQL: windows with removal minus windows without.
            "postgres_cpu_ms_per_1000_rows": round(extra_pg_s * 1000 / rows * 1000, 1),
            "wal_bytes_per_row": round((wal_by_side["on"] - wal_by_side["off"]) / rows),
        }
    result["tables_after"] = table_sizes(engine)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired rows to remove")
    parser.add_argument("--kept", type=int, default=100_000, help="finished rows still kept")
    parser.add_argument("--rate", type=float, default=200.0, help="accepts per second")
    parser.add_argument("--window-s", type=float, default=10.0, help="removal on, then off")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--pause-s", type=float, default=0.0, help="between runs (1: like one worker's sweep)"
    )
    parser.add_argument("--max-s", type=float, default=900.0, help="stop measuring by then")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=Path("bench-retention.json"))
    args = parser.parse_args(argv)
    result = run(args)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    for side in ("removal_off", "removal_on"):
        figures = result[side]
        print(
            f"{side:12} accept p50 {figures['p50_ms']:.1f} ms  p99 {figures['p99_ms']:.1f} ms  "
            f"max {figures['max_ms']:.1f} ms  ({figures['requests']} requests, "
            f"{figures['errors']} errors)"
        )
    removal = result["removal"]
    print(
        f"removed {removal['removed']:,} in {removal['busy_s']} s of removing: "
        f"{removal['rows_per_s']:,} rows/s; a batch of {args.batch_size}: "
        f"p50 {removal['batch_p50_ms']:.1f} ms, p99 {removal['batch_p99_ms']:.1f} ms"
    )
    print(
        f"PostgreSQL per 1,000 rows removed: {removal['postgres_cpu_ms_per_1000_rows']} ms CPU, "
        f"{removal['wal_bytes_per_row'] * 1000 / 2**20:.2f} MiB WAL"
    )
    for side in ("removal_off", "removal_on"):
        waits = result[side]["accept_waits"]
        top = ", ".join(f"{event} {count}" for event, count in list(waits.items())[:4])
        locks = sum(count for event, count in waits.items() if event.startswith("Lock:"))
        print(f"{side:12} accepts seen waiting on: {top}; on a lock: {locks}")
    print(
        f"other programs used {result['cpu_s'].get('other', 0)} CPU-s of {result['cpu_s']['machine']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
