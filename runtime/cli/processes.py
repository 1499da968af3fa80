"""`ferry dev`, `ferry worker`, `ferry scheduler`, `ferry migrate`: processes and schema."""

from __future__ import annotations

import argparse
from typing import Any

from runtime import devserver
from runtime.cli.output import EXIT_OK, EXIT_USER_ERROR, say, warn
from runtime.errors import BadRequest
from runtime.registry import QUEUES
from runtime.settings import Settings
from runtime.store import Store
from runtime.store.tenant_scope import Gap

#: Settings `ferry dev` changes when the user left them unset: a single local process can
#: re-send lost work after 2 s instead of 60 (and a restarted one run its attempts again
#: after a 5 s lease instead of 30), and write logs for a terminal.
DEV_DEFAULTS: dict[str, object] = {
    "redispatch_after_s": 2.0,
    "lease_s": 5.0,
    "lease_grace_s": 5.0,
    "log_format": "console",
}


def dev_settings(settings: Settings) -> Settings:
    """`settings` with the dev defaults for every value the user did not set."""
    missing = {k: v for k, v in DEV_DEFAULTS.items() if k not in settings.model_fields_set}
    return Settings.from_env(**missing) if missing else settings


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the gateway is a Falcon app, and no other command needs it.
    from gateway.app import create_app

    return devserver.run(
        dev_settings(settings), host=args.host, port=args.port, app_factory=create_app
    )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.worker.process import run_worker

    if args.threads is not None and args.threads < 1:
        raise BadRequest("--threads takes a number of threads, 1 or more")
    if args.metrics_port is not None and not 1 <= args.metrics_port <= 65_535:
        raise BadRequest("--metrics-port takes a TCP port, 1 to 65535")
    queues = _parse_queues(args.queues) if args.queues is not None else None
    return run_worker(settings, queues=queues, threads=args.threads, metrics_port=args.metrics_port)


def _parse_queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise BadRequest(f"--queues takes some of {', '.join(QUEUES)}; got {text!r}")
    return queues


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.scheduling.periodiq_entry import run

    return run(settings)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.engine import make_url

    store = Store.from_settings(settings)
    try:
        if not args.check:
            store.migrate()
        current = store.is_current()
        gaps = store.db.tenant_scope_gaps()
    finally:
        store.close()
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    if current:
        say(f"the store is at the newest schema: {where}")
    else:
        warn(f"the store is not at the newest schema: {where} (run `ferry migrate`)")
    if store.db.dialect != "postgresql":
        say(
            "tenant scope: SQLite scopes functions' ORM queries only; raw SQL in a "
            "function is not scoped (docs/tenancy.md)"
        )
    elif not gaps:
        say(
            f"tenant scope: functions' sessions run as {settings.function_db_role} under "
            "row-level security"
        )
    else:
        _print_scope_gaps(gaps)
    return EXIT_OK if (current and not gaps) or not args.check else EXIT_USER_ERROR


def _print_scope_gaps(gaps: list[Gap]) -> None:
    warn(
        "tenant scope: NOT SET UP; functions that use ctx.session are refused until it is "
        "(docs/tenancy.md). Missing:"
    )
    for gap in gaps:
        warn(f"  - {gap.problem}")
    operator = [gap.fix for gap in gaps if gap.operator]
    if operator:
        warn("Run once as a role with CREATEROLE (or a superuser), then `ferry migrate` again:")
        warn("\n".join(dict.fromkeys(operator)))
    else:
        warn("Run `ferry migrate` (as the role that owns the tables) to add the rest.")


def add_commands(sub: Any) -> None:
    """Add `ferry dev`, `ferry worker`, `ferry scheduler` and `ferry migrate`."""
    dev = sub.add_parser("dev", help="run everything in one process on the embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    # The servers configure their own logging; other commands log warnings to stderr.
    dev.set_defaults(run=cmd_dev, own_logging=True)

    worker = sub.add_parser("worker", help="run a worker process (production)")
    worker.add_argument(
        "--queues", help=f"comma-separated, of {','.join(QUEUES)} (default: default,scheduled)"
    )
    worker.add_argument("--threads", type=int, help="default: FERRY_WORKER_THREADS")
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve this process's metrics (with FERRY_METRICS_DIR, the directory's sum) "
        "on this port, for a host or pod without a web process (default: FERRY_METRICS_PORT)",
    )
    worker.set_defaults(run=cmd_worker, own_logging=True)

    scheduler = sub.add_parser(
        "scheduler", help="run the scheduler process: fires the schedules (production)"
    )
    scheduler.set_defaults(run=cmd_scheduler, own_logging=True)

    migrate = sub.add_parser(
        "migrate",
        help="bring the store's schema to the newest version and check the tenant scope set-up",
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 unless the schema is current and the tenant scope set up",
    )
    migrate.set_defaults(run=cmd_migrate)
