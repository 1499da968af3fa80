"""`ferry keys create|list|revoke`: API keys, whose secret is printed once."""

from __future__ import annotations

import argparse
import re
from typing import Any

from runtime.cli.connect import open_tenants
from runtime.cli.output import EXIT_OK, add_json_flag, say, show
from runtime.errors import BadRequest
from runtime.services.audit import Actor
from runtime.settings import Settings
from runtime.store.views import rfc3339


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    with open_tenants(settings) as service:
        if args.operator:
            view, plaintext = service.create_operator_key(
                args.scopes, name=args.name, actor=Actor.cli()
            )
        else:
            view, plaintext = service.create_key(
                args.tenant, args.scopes, name=args.name, actor=Actor.cli()
            )
    owner = "an operator (no tenant)" if view.tenant_id is None else f"tenant {view.tenant_id}"
    say(
        f"created key {view.id} for {owner} with scopes "
        f"{','.join(sorted(view.scopes))}; it is shown this once, store it now:"
    )
    say(plaintext)
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_tenants(settings) as service:
        keys = service.list_keys(args.tenant)
        states = [service.key_state(k) for k in keys]
    records = [
        {
            "id": k.id,
            "tenant_id": k.tenant_id,
            "name": k.name,
            "scopes": sorted(k.scopes),
            "state": state,
            "created_at": rfc3339(k.created_at),
            "expires_at": rfc3339(k.expires_at),
            "revoked_at": rfc3339(k.revoked_at),
        }
        for k, state in zip(keys, states, strict=True)
    ]
    show(args.json, "keys", records, ["id", "tenant_id", "name", "scopes", "state", "created_at"])
    return EXIT_OK


#: A whole key as `keys create` prints it, `fy_<id>_<secret>`: the id is what `revoke` takes.
_WHOLE_KEY = re.compile(r"fy_([a-z0-9]{12})_\S*")


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    whole = _WHOLE_KEY.fullmatch(args.key_id.strip())
    if whole:
        # Never echo the secret back: it may be on a shared screen or in a log.
        raise BadRequest(
            "`ferry keys revoke` takes the key's id, not the whole key; the id of this one "
            f"is {whole.group(1)}: run `ferry keys revoke {whole.group(1)}` (nothing was revoked)"
        )
    with open_tenants(settings) as service:
        key = service.revoke_key(args.key_id, actor=Actor.cli())
    owner = "an operator" if key.tenant_id is None else f"tenant {key.tenant_id}"
    say(f"key {key.id} of {owner} is revoked")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `ferry keys ACTION`."""
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = ksub.add_parser("create", help="create a key; it is printed once, on the last line")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--tenant", metavar="ID", help="the tenant the key belongs to")
    owner.add_argument(
        "--operator",
        action="store_true",
        help="an operator key: of no tenant, with admin; acts for one with X-Tenant-ID",
    )
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: invoke,read,manage for a tenant's key; admin for an operator key",
    )
    create.add_argument("--name", default="", help="what the key is for")
    create.set_defaults(run=cmd_create)
    listing = ksub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", metavar="ID", help="only this tenant's keys")
    add_json_flag(listing)
    listing.set_defaults(run=cmd_list)
    revoke = ksub.add_parser("revoke", help="revoke a key")
    revoke.add_argument(
        "key_id",
        metavar="KEY_ID",
        help="the id `keys list` shows (in a key fy_<id>_<secret>, the part between the underscores)",
    )
    revoke.set_defaults(run=cmd_revoke)
