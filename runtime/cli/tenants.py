"""`ferry tenants create|list|suspend|resume`."""

from __future__ import annotations

import argparse
from typing import Any

from runtime.cli.connect import open_tenants
from runtime.cli.output import EXIT_OK, add_json_flag, say, show
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


def add_commands(sub: Any) -> None:
    """Add `ferry tenants ACTION`."""
    tenants = sub.add_parser("tenants", help="create, list, suspend and resume tenants")
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
