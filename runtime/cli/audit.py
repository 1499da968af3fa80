"""`ferry audit list`: the audit trail, newest first, as an operator sees it (every tenant)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from runtime.cli.connect import open_store
from runtime.cli.output import EXIT_OK, add_json_flag, print_json, say, show
from runtime.services.audit import MAX_PAGE, AuditTrail
from runtime.settings import Settings
from runtime.store.audit import AuditRecordView
from runtime.store.views import rfc3339

COLUMNS = ["at", "tenant_id", "actor_kind", "actor_id", "action", "target", "request_id"]


def record_of(view: AuditRecordView) -> dict[str, Any]:
    """A record as the CLI (and the API) shows it."""
    return {
        "id": view.id,
        "at": rfc3339(view.at),
        "tenant_id": view.tenant_id,
        "actor_kind": view.actor_kind,
        "actor_id": view.actor_id,
        "action": view.action,
        "target": view.target,
        "request_id": view.request_id,
        "detail": view.detail,
    }


def rfc3339_arg(text: str) -> datetime:
    """`--since` and `--until`: an ISO 8601 time; without an offset, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2030-01-31T09:00:00Z"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"a page is 1 to {MAX_PAGE} records")
    return value


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        page = AuditTrail(store).list(
            args.tenant,
            action=args.action,
            target=args.target,
            actor=args.actor,
            since=args.since,
            until=args.until,
            limit=args.limit,
            cursor=args.cursor,
        )
    records = [record_of(v) for v in page.records]
    if args.json:
        print_json({"records": records, "next_cursor": page.next_cursor})
        return EXIT_OK
    show(False, "records", records, COLUMNS)
    if page.next_cursor:
        say(f"more: --cursor {page.next_cursor}")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `ferry audit list`."""
    audit = sub.add_parser("audit", help="the audit trail of manage and admin actions")
    actions = audit.add_subparsers(dest="action_name", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="records newest first (every tenant's)")
    listing.add_argument("--tenant", metavar="ID", help="only this tenant's records")
    listing.add_argument("--action", help="only this action, like invocation.cancel")
    listing.add_argument("--target", help="only actions on this id")
    listing.add_argument("--actor", metavar="WHO", help="only this key id or OS user")
    listing.add_argument("--since", type=rfc3339_arg, metavar="TIME", help="from this time")
    listing.add_argument("--until", type=rfc3339_arg, metavar="TIME", help="before this time")
    listing.add_argument("--limit", type=page_size, default=50, help="page size (default 50)")
    listing.add_argument("--cursor", help="the cursor the previous page printed")
    add_json_flag(listing)
    listing.set_defaults(run=cmd_list)
