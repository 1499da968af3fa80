"""`python -m bench [--quick] [--out FILE] [--only ferry,dramatiq,celery] [--profile DIR]`."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import loadgen, report
from bench.infra import BenchError, busy_cpus, pg_database, redis_namespace
from bench.plan import FULL, QUICK

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (about 2 minutes)")
    parser.add_argument("--out", default="bench-results.json", help="JSON file to write")
    parser.add_argument(
        "--only",
        default=",".join(report.SYSTEMS),
        help="comma-separated systems to run (default: %(default)s)",
    )
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL admin URL (default: local)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (default: local)")
    parser.add_argument(
        "--profile", type=Path, help="write py-spy flame graphs of Ferry's processes here"
    )
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the Python load generator even if wrk exists"
    )
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    parser.add_argument(
        "--fairness-only",
        action="store_true",
        help="Ferry's fair-dispatch rows alone (drains with FERRY_FAIR_DISPATCH on and off)",
    )
    parser.add_argument(
        "--ferry",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Ferry setting for every Ferry process, e.g. redis_consumer_wakeup=true "
        "(FERRY_ prefix optional; repeatable)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(report.SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    overrides = {}
    for item in args.ferry:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"--ferry takes NAME=VALUE, not {item!r}")
        overrides[name.strip().lower().removeprefix("ferry_")] = value
    plan = QUICK if args.quick else FULL
    # SIGTERM unwinds like Ctrl-C: the database, the Redis keys and the children go.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    if args.no_wrk:
        loadgen.USE_WRK = False
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="ferry-bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    _say(f"plan: {plan}; logs in {log_dir}")
    background = busy_cpus()
    if background > 0.3:
        _say(f"warning: other programs keep {background:.1f} CPUs busy; figures will be low")
    results: dict[str, dict[str, Any]] = {}
    failed = False
    details: dict[str, Any] = {}
    started = time.monotonic()
    try:
        with redis_namespace(args.redis) as namespace:
            if "ferry" in chosen:
                from bench import ferry_run

                try:
                    with pg_database(args.pg) as database_url:
                        deployment = ferry_run.FerryDeployment(
                            database_url, args.redis, f"{namespace}-ferry", log_dir, overrides
                        )
                        out = ferry_run.run(
                            deployment,
                            plan,
                            profile_dir=args.profile,
                            say=_say,
                            fairness_only=args.fairness_only,
                        )
                    results["ferry"], details["ferry"] = out["figures"], out["details"]
                except BenchError as ex:
                    _say(f"ferry: failed: {ex}")
                    details["ferry"] = {"error": str(ex)}
                    failed = True
            from bench import reference_run

            for name, system_class in (
                ("dramatiq", reference_run.RawDramatiq),
                ("celery", reference_run.Celery),
            ):
                if name not in chosen:
                    continue
                try:
                    system = system_class(args.redis, f"{namespace}-{name}")
                except ImportError as ex:
                    # Celery is a benchmark-only dependency (the `bench` dependency group).
                    _say(f"{name}: skipped, it is not installed ({ex})")
                    continue
                try:
                    out = reference_run.run(system, plan, log_dir, _say)
                except BenchError as ex:
                    # A reference row that fails leaves the others standing.
                    _say(f"{name}: failed: {ex}")
                    details[name] = {"error": str(ex)}
                    failed = True
                    continue
                results[name], details[name] = out["figures"], out["details"]
    except BenchError as ex:
        _say(f"benchmark failed: {ex}")
        return 1
    elapsed = time.monotonic() - started
    print(report.table(results))
    print(report.NOTES)
    document = {
        **report.summary(results),
        "details": details,
        "plan": plan.__dict__,
        "ferry_settings": overrides,
        "environment": {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "busy_cpus_before": round(background, 2),
            "load_average_after": os.getloadavg(),
            "load_generator": "wrk" if loadgen.wrk_path() else "python",
            "seconds": round(elapsed, 1),
        },
    }
    report.write_json(Path(args.out), document)
    _say(f"done in {elapsed:.0f}s; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
