"""`ferry schedules ...`: list, show, pause, resume, trigger, delete and restore schedules.

The CLI acts as an operator across all tenants.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any

from runtime.cli.connect import open_runtime
from runtime.cli.output import EXIT_OK, add_json_flag, print_json, say, table, warn
from runtime.services.audit import Actor
from runtime.services.schedules import ScheduleService, ScheduleView
from runtime.settings import Settings
from runtime.store.views import rfc3339


@contextlib.contextmanager
def _control(settings: Settings) -> Iterator[ScheduleService]:
    """Schedule control as an operator across all tenants, for one command."""
    with open_runtime(settings) as runtime:
        yield runtime.schedules


def _record(view: ScheduleView) -> dict[str, Any]:
    record = view.as_dict()
    record["deleted_at"] = rfc3339(view.state.deleted_at)
    return record


def _state(record: dict[str, Any]) -> str:
    if record["deleted_at"]:
        return "deleted"
    return "paused" if record["paused"] else "active"


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with _control(settings) as control:
        records = [_record(v) for v in control.list(None, include_deleted=args.deleted)]
    if args.json:
        print_json({"schedules": records})
        return EXIT_OK
    rows = [["ID", "STATE", "CRON", "TIMEZONE", "FUNCTION", "TENANT", "NEXT RUN", "LAST RUN"]]
    for r in records:
        rows.append(
            [
                r["id"],
                _state(r),
                r["cron"],
                r["timezone"],
                r["function"],
                r["tenant"],
                r["next_run_at"] or "",
                r["last_run_at"] or "",
            ]
        )
    table(rows)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with _control(settings) as control:
        record = _record(control.get(args.schedule_id, None))
    if args.json:
        print_json(record)
        return EXIT_OK
    for name in ("id", "function", "tenant", "cron", "timezone", "misfire", "jitter_s"):
        say(f"{name}: {record[name]}")
    say(f"input: {json.dumps(record['input'])}")
    say(f"state: {_state(record)}")
    say(f"last run: {record['last_run_at'] or 'never'}")
    say("next runs: " + (", ".join(record["next_run_times"]) or "none (paused)"))
    say("history:")
    for run in record["history"]:
        inv = run["invocation"]
        say(
            f"  {run['tick_at']}  {run['kind']:<6}  {inv['tenant_id']}  {inv['id']}  "
            f"{inv['status']}"
        )
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    with _control(settings) as control:
        control.pause(args.schedule_id, actor=Actor.cli())
    say(f"schedule {args.schedule_id} is paused; it stays paused until resumed")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    with _control(settings) as control:
        view = control.resume(args.schedule_id, actor=Actor.cli())
    next_run = rfc3339(view.next_run_times[0]) if view.next_run_times else "never"
    say(f"schedule {args.schedule_id} is active; next run at {next_run}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    with _control(settings) as control:
        control.delete(args.schedule_id, actor=Actor.cli())
    say(f"schedule {args.schedule_id} is deleted; `ferry schedules restore` brings it back")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    with _control(settings) as control:
        restored = control.restore(actor=Actor.cli())
    say(f"restored: {', '.join(restored)}" if restored else "no schedule was deleted")
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace, settings: Settings) -> int:
    with _control(settings) as control:
        actor = Actor.cli()
        invocations = control.trigger(
            args.schedule_id,
            args.tenant,
            token=args.key,
            request_id=actor.request_id,
            actor=actor,
        )
    if settings.embedded_broker and invocations:
        warn(
            "note: the in-process broker lives only inside one process; the invocations "
            "are queued in the store and run when `ferry dev` or a worker on the same "
            "store picks them up"
        )
    print_json({"schedule_id": args.schedule_id, "invocations": [i.as_dict() for i in invocations]})
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `ferry schedules [list|show|pause|resume|trigger|delete|restore]`."""
    schedules = sub.add_parser("schedules", help="list and operate schedules (default: list them)")
    schedules.set_defaults(run=cmd_list, json=False, deleted=False)
    actions = schedules.add_subparsers(dest="action", metavar="ACTION")

    listing = actions.add_parser("list", help="list schedules with their next and last runs")
    add_json_flag(listing)
    listing.add_argument("--deleted", action="store_true", help="include deleted schedules")
    listing.set_defaults(run=cmd_list)

    show = actions.add_parser("show", help="one schedule: next five runs and recent history")
    show.add_argument("schedule_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=cmd_show)

    for action, command, text in (
        ("pause", cmd_pause, "stop firing until resumed (survives restarts)"),
        ("resume", cmd_resume, "fire again from the next tick"),
        ("delete", cmd_delete, "stop firing and hide it until restored"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("schedule_id", metavar="ID")
        parser.set_defaults(run=command)

    trigger = actions.add_parser("trigger", help="run a schedule now")
    trigger.add_argument("schedule_id", metavar="ID")
    trigger.add_argument("--tenant", metavar="ID", help="only in this tenant")
    trigger.add_argument("--key", metavar="K", help="a retried trigger with the same key runs once")
    trigger.set_defaults(run=cmd_trigger)

    restore = actions.add_parser("restore", help="register every schedule in the code again")
    restore.set_defaults(run=cmd_restore)
