"""The `ferry` command line: one entry point for operators, developers and servers.

Every command reads the same `Settings.from_env()` as the servers. Exit codes: 0 done,
1 a user error (one line on stderr, never a traceback), 2 bad usage or a bad `FERRY_*`
setting, 3 `invoke --wait` ran out before the invocation finished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from runtime import devserver, scaffold
from runtime.errors import (
    BadRequest,
    ConfigurationError,
    FerryError,
    InputInvalid,
    SettingsInvalid,
)
from runtime.logs import configure_logging
from runtime.registry import QUEUES, Registry
from runtime.scheduling.cli import add_schedule_commands
from runtime.settings import Settings
from runtime.store import Store
from runtime.store.models import TenantStatus
from runtime.store.tenants import parse_scopes
from runtime.store.views import ApiKeyView, InvocationView, rfc3339

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_BAD_SETTINGS = 2
EXIT_STILL_RUNNING = 3

#: Settings `ferry dev` changes when the user left them unset: a single local process can
#: re-send lost work after 2 s instead of 60, and write logs for a terminal.
DEV_DEFAULTS: dict[str, object] = {
    "redispatch_after_s": 2.0,
    "lease_grace_s": 5.0,
    "log_format": "console",
}

Command = Callable[[argparse.Namespace, Settings], int]


class StoreNotMigrated(ConfigurationError):
    """The store's schema is not the newest; run `ferry migrate`."""


# --- shared helpers ----------------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, file=sys.stdout, flush=True)


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_json(value: Any) -> None:
    _say(json.dumps(value, indent=2, sort_keys=False))


def _cell(value: Any) -> str:
    """A table cell: lists comma-joined, text cut to its first line."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    lines = str(value).splitlines()
    return lines[0] if lines else ""


def _show(as_json: bool, kind: str, records: list[dict[str, Any]], columns: list[str]) -> None:
    """Print records as `{kind: [...]}` JSON, or as a table of some of their fields."""
    if as_json:
        _print_json({kind: records})
        return
    cells = [[c.upper() for c in columns]] + [[_cell(r[c]) for c in columns] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        _say(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )


@contextlib.contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """The store, after checking its schema is current (so no command meets missing tables)."""
    store = Store.from_settings(settings)
    try:
        _check_schema(store)
        yield store
    finally:
        store.close()


def _check_schema(store: Store) -> None:
    if not store.is_current():
        raise StoreNotMigrated(
            "the store has not been migrated to the newest schema; run `ferry migrate`"
        )


def _describe_error(ex: FerryError) -> str:
    """One line: the message, and for invalid input each problem's location and message."""
    text = ex.message
    if isinstance(ex, InputInvalid) and ex.errors:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}" for e in ex.errors
        )
        text = f"{text}: {problems}"
    return " ".join(text.split())


# --- ferry dev, ferry worker ---------------------------------------------------------------


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
    from runtime.worker import run_worker

    if args.threads is not None and args.threads < 1:
        raise BadRequest("--threads takes a number of threads, 1 or more")
    queues = _parse_queues(args.queues) if args.queues is not None else None
    return run_worker(settings, queues=queues, threads=args.threads)


def _parse_queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise BadRequest(f"--queues takes some of {', '.join(QUEUES)}; got {text!r}")
    return queues


# --- ferry migrate, tenants, keys ------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.engine import make_url

    store = Store.from_settings(settings)
    try:
        store.migrate()
    finally:
        store.close()
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    _say(f"the store is at the newest schema: {where}")
    return EXIT_OK


def cmd_tenants_create(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        tenant = store.tenants.create(args.tenant_id, args.name)
    _say(f"created tenant {tenant.id} ({tenant.name})")
    return EXIT_OK


def cmd_tenants_list(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        tenants = store.tenants.list()
    records = [
        {"id": t.id, "name": t.name, "status": t.status, "created_at": rfc3339(t.created_at)}
        for t in tenants
    ]
    _show(args.json, "tenants", records, ["id", "name", "status", "created_at"])
    return EXIT_OK


def _set_tenant_status(status: TenantStatus) -> Command:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        with _store(settings) as store:
            tenant = store.tenants.set_status(args.tenant_id, status)
        _say(f"tenant {tenant.id} is {tenant.status}")
        return EXIT_OK

    return command


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    scopes = parse_scopes(args.scopes)
    with _store(settings) as store:
        view, plaintext = store.tenants.create_key(args.tenant, scopes, name=args.name)
    _say(
        f"created key {view.id} for tenant {view.tenant_id} with scopes "
        f"{','.join(sorted(view.scopes))}; it is shown this once, store it now:"
    )
    _say(plaintext)
    return EXIT_OK


def _key_state(key: ApiKeyView, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        if args.tenant:
            store.tenants.get(args.tenant)  # an unknown tenant is an error, not an empty list
        keys = store.tenants.list_keys(args.tenant)
        now = store.db.clock()
    records = [
        {
            "id": k.id,
            "tenant_id": k.tenant_id,
            "name": k.name,
            "scopes": sorted(k.scopes),
            "state": _key_state(k, now),
            "created_at": rfc3339(k.created_at),
            "expires_at": rfc3339(k.expires_at),
            "revoked_at": rfc3339(k.revoked_at),
        }
        for k in keys
    ]
    _show(args.json, "keys", records, ["id", "tenant_id", "name", "scopes", "state", "created_at"])
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        key = store.tenants.revoke_key(args.key_id)
    _say(f"key {key.id} of tenant {key.tenant_id} is revoked")
    return EXIT_OK


# --- ferry functions, invoke, new ------------------------------------------------------------


def cmd_functions(args: argparse.Namespace, settings: Settings) -> int:
    registry = Registry.load(settings.functions_module, settings)
    records = [fn.describe() for fn in registry]
    _show(
        args.json,
        "functions",
        records,
        ["name", "queue", "max_retries", "timeout_s", "description"],
    )
    return EXIT_OK


def _parse_payload(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as ex:
        raise BadRequest(f"--data is not valid JSON: {ex}") from ex


def _printable_ascii(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def _invocation_json(store: Store, invocation: InvocationView) -> dict[str, Any]:
    shown = invocation.as_dict()
    shown["attempt_log"] = [a.as_dict() for a in store.invocations.attempts(invocation.id)]
    return shown


def cmd_invoke(args: argparse.Namespace, settings: Settings) -> int:
    from runtime.app import Runtime

    payload = _parse_payload(args.data)
    if args.key is not None and not (0 < len(args.key) <= 255 and _printable_ascii(args.key)):
        raise BadRequest("--key takes 1 to 255 printable ASCII characters")
    if args.wait is not None and args.wait < 0:
        raise BadRequest("--wait takes a number of seconds, 0 or more")
    runtime = Runtime(settings)
    try:
        _check_schema(runtime.store)
        invocation, created = runtime.invocations.accept(
            tenant_id=args.tenant,
            function=args.name,
            payload=payload,
            idempotency_key=args.key,
            trigger="cli",
        )
        if not created:
            _warn(
                f"replayed: idempotency key {invocation.idempotency_key!r} names an "
                "existing invocation; it was not invoked again"
            )
        elif settings.embedded_broker and not invocation.finished:
            _warn(
                "note: the in-process broker (FERRY_BROKER_URL=memory://) lives only inside "
                "one process; the invocation is queued in the store and runs when `ferry dev` "
                "or a `ferry worker` on the same store picks it up"
            )
        if args.wait:
            deadline = time.monotonic() + args.wait
            while not invocation.finished and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                invocation = runtime.store.invocations.get(invocation.id)
        _print_json(_invocation_json(runtime.store, invocation))
    finally:
        runtime.close()
    if invocation.status in ("failed", "cancelled"):
        return EXIT_USER_ERROR
    if args.wait and not invocation.finished:
        _warn(f"the invocation is still {invocation.status} after {args.wait:g} s")
        return EXIT_STILL_RUNNING
    return EXIT_OK


def cmd_new(args: argparse.Namespace, settings: Settings) -> int:
    package = settings.functions_module.split(",")[0].strip()
    written = scaffold.write_function(args.name, package=package, settings=settings)
    for path in written:
        _say(f"created {path}")
    _say(f"run its test:   python -m pytest -q {written[1]}")
    _say(
        f"invoke it:      ferry invoke {args.name} --tenant demo --data "
        f"'{json.dumps(scaffold.EXAMPLE_INPUT)}' (restart `ferry dev` first to load it)"
    )
    return EXIT_OK


# --- the parser ----------------------------------------------------------------------------


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_admin_commands(sub: Any) -> None:
    migrate = sub.add_parser("migrate", help="bring the store's schema to the newest version")
    migrate.set_defaults(run=cmd_migrate)

    tenants = sub.add_parser("tenants", help="create, list, suspend and resume tenants")
    tsub = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="create a tenant")
    create.add_argument("tenant_id", metavar="ID", help="matches [a-z0-9][a-z0-9-]{0,62}")
    create.add_argument("--name", help="a display name (default: the id)")
    create.set_defaults(run=cmd_tenants_create)
    listing = tsub.add_parser("list", help="list tenants")
    _add_json_flag(listing)
    listing.set_defaults(run=cmd_tenants_list)
    for action, status in (("suspend", TenantStatus.SUSPENDED), ("resume", TenantStatus.ACTIVE)):
        parser = tsub.add_parser(action, help=f"{action} a tenant")
        parser.add_argument("tenant_id", metavar="ID")
        parser.set_defaults(run=_set_tenant_status(status))

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = ksub.add_parser("create", help="create a key; it is printed once, on the last line")
    create.add_argument("--tenant", required=True, metavar="ID")
    create.add_argument("--scopes", required=True, help="comma-separated: invoke,read,manage,admin")
    create.add_argument("--name", default="", help="what the key is for")
    create.set_defaults(run=cmd_keys_create)
    listing = ksub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", metavar="ID", help="only this tenant's keys")
    _add_json_flag(listing)
    listing.set_defaults(run=cmd_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the id `keys list` shows")
    revoke.set_defaults(run=cmd_keys_revoke)


def _add_function_commands(sub: Any) -> None:
    functions = sub.add_parser("functions", help="list the deployment's functions")
    _add_json_flag(functions)
    functions.set_defaults(run=cmd_functions)

    invoke = sub.add_parser("invoke", help="invoke a function as a tenant (trigger `cli`)")
    invoke.add_argument("name", metavar="NAME", help="the function")
    invoke.add_argument("--tenant", required=True, metavar="ID")
    invoke.add_argument("--data", required=True, metavar="JSON", help="the input, as JSON")
    invoke.add_argument("--key", metavar="K", help="idempotency key (default: the invocation id)")
    invoke.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="wait up to S seconds for it to finish; exit 1 if it failed, 3 if it is still going",
    )
    invoke.set_defaults(run=cmd_invoke)

    new = sub.add_parser("new", help="write a new function module and its test")
    new.add_argument("name", metavar="NAME", help="a Python identifier, e.g. resize_image")
    new.set_defaults(run=cmd_new)


def _add_process_commands(sub: Any) -> None:
    dev = sub.add_parser("dev", help="run everything in one process on the embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    dev.set_defaults(run=cmd_dev)

    worker = sub.add_parser("worker", help="run a worker process (production)")
    worker.add_argument(
        "--queues", help=f"comma-separated, of {','.join(QUEUES)} (default: default,scheduled)"
    )
    worker.add_argument("--threads", type=int, help="default: FERRY_WORKER_THREADS")
    worker.set_defaults(run=cmd_worker)


#: Each adds its commands to the `ferry` parser; a new family of commands brings its own.
COMMAND_GROUPS: list[Callable[[Any], None]] = [
    _add_process_commands,
    _add_admin_commands,
    _add_function_commands,
    add_schedule_commands,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferry",
        description="Ferry: a function runtime for multi-tenant background work.",
        epilog="Every command reads the FERRY_* environment variables, like the servers.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_group in COMMAND_GROUPS:
        add_group(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `ferry` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.run not in (cmd_dev, cmd_worker):
            _configure_quiet_logging(settings)
        return int(args.run(args, settings))
    except SettingsInvalid as ex:
        _warn(f"ferry: bad setting: {ex.message}")
        return EXIT_BAD_SETTINGS
    except FerryError as ex:
        _warn(f"ferry: {_describe_error(ex)}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time (pytest swaps it between tests)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _configure_quiet_logging(settings: Settings) -> None:
    """Logs go to stderr, so stdout stays what the command prints; warnings only by default."""
    if "log_level" not in settings.model_fields_set:
        settings = settings.model_copy(update={"log_level": "warning"})
    configure_logging(settings, stream=_CurrentStderr())


if __name__ == "__main__":
    sys.exit(main())
