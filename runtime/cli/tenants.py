"""`ferry tenants create|list|suspend|resume|set-retention`."""

from __future__ import annotations

import argparse
from typing import Any

from runtime.cli import tenant_limits
from runtime.cli.connect import open_tenants
from runtime.cli.output import EXIT_OK, add_json_flag, print_json, say, show
from runtime.services.tenants import RetentionPolicy
from runtime.settings import Settings
from runtime.store.views import rfc3339


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    with open_tenants(settings) as service:
        tenant = service.create(args.tenant_id, args.name)
    say(f"created tenant {tenant.id} ({tenant.name})")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_tenants(settings) as service:
        tenants = service.list()
    records = [
        {"id": t.id, "name": t.name, "status": t.status, "created_at": rfc3339(t.created_at)}
        for t in tenants
    ]
    show(args.json, "tenants", records, ["id", "name", "status", "created_at"])
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace, settings: Settings) -> int:
    with open_tenants(settings) as service:
        tenant = service.suspend(args.tenant_id)
    say(f"tenant {tenant.id} is {tenant.status}")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    with open_tenants(settings) as service:
        tenant = service.resume(args.tenant_id)
    say(f"tenant {tenant.id} is {tenant.status}")
    return EXIT_OK


#: `set-retention` options: the final status each sets.
RETENTION_OPTIONS = ("succeeded", "failed", "cancelled")


def retention_seconds(text: str) -> int | None:
    """`--succeeded` and the like: seconds (0 keeps forever), or `default` (None)."""
    if text == "default":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds or default"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError("seconds must be 0 (keep forever) or more")
    return value


def cmd_set_retention(args: argparse.Namespace, settings: Settings) -> int:
    # Options not given are absent from `args` (SUPPRESS): those statuses keep their value.
    changes = {s: vars(args)[s] for s in RETENTION_OPTIONS if s in vars(args)}
    with open_tenants(settings) as service:
        own = (
            service.set_retention(args.tenant_id, changes)
            if changes
            else service.retention(args.tenant_id)
        )
    effective = RetentionPolicy.from_settings(settings).for_tenant(own)
    records = [
        {
            "status": status,
            "seconds": effective.seconds(status),
            "source": "default" if getattr(own, f"{status}_s") is None else "tenant",
        }
        for status in RETENTION_OPTIONS
    ]
    if args.json:
        print_json({"tenant_id": own.tenant_id, "retention": records})
        return EXIT_OK
    say(f"tenant {own.tenant_id} keeps finished invocations (0 s: forever):")
    for record in records:
        say(f"  {record['status']}: {record['seconds']} s ({record['source']})")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `ferry tenants ACTION`."""
    tenants = sub.add_parser(
        "tenants", help="create, list, show, suspend and resume tenants; set retention and limits"
    )
    tsub = tenants.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="create a tenant")
    create.add_argument("tenant_id", metavar="ID", help="matches [a-z0-9][a-z0-9-]{0,62}")
    create.add_argument("--name", help="a display name (default: the id)")
    create.set_defaults(run=cmd_create)
    listing = tsub.add_parser("list", help="list tenants")
    add_json_flag(listing)
    listing.set_defaults(run=cmd_list)
    for action, command in (("suspend", cmd_suspend), ("resume", cmd_resume)):
        parser = tsub.add_parser(action, help=f"{action} a tenant")
        parser.add_argument("tenant_id", metavar="ID")
        parser.set_defaults(run=command)
    retention = tsub.add_parser(
        "set-retention",
        help="how long the tenant's finished invocations are kept, per final status",
        description="Seconds after it finished that an invocation, its attempts and its "
        "idempotency key are kept, per final status. 0 keeps them forever; `default` "
        "follows FERRY_RETENTION_<STATUS>_S. With no option, prints the current values.",
    )
    retention.add_argument("tenant_id", metavar="ID")
    for status in RETENTION_OPTIONS:
        retention.add_argument(
            f"--{status}",
            type=retention_seconds,
            default=argparse.SUPPRESS,
            metavar="S",
            help=f"seconds to keep {status} invocations, 0 (forever) or default",
        )
    add_json_flag(retention)
    retention.set_defaults(run=cmd_set_retention)
    tenant_limits.add_actions(tsub)
