"""`ferry secrets set|list|delete|rotate|webhook`: tenants' secrets and the key they are sealed with.

A value is never an argument (it would land in the shell's history and in `ps`): `set`
reads it from standard input (a terminal asks for it without echoing) or from
`--from-file PATH`; one trailing newline is dropped. `list` shows names and times only.
`rotate` re-encrypts every stored secret under the current `FERRY_SECRET_KEY`
(docs/operations.md, "Rotating FERRY_SECRET_KEY"). `webhook` shows a tenant's webhook
signing secret, and `--rotate` makes a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.cli.connect import open_store
from runtime.cli.output import EXIT_OK, add_json_flag, say, show
from runtime.errors import BadRequest
from runtime.secrets import SecretBox
from runtime.services.audit import Actor
from runtime.services.secrets import SecretService
from runtime.settings import Settings
from runtime.store.views import rfc3339


@contextlib.contextmanager
def open_secrets(settings: Settings) -> Iterator[SecretService]:
    """The secrets service over the store, for one command."""
    with open_store(settings) as store:
        yield SecretService(
            store,
            SecretBox.from_settings(settings),
            webhook_grace_s=settings.webhook_secret_grace_s,
        )


def read_value(from_file: str | None) -> str:
    """The value to set: from the file, else standard input (asked for on a terminal)."""
    if from_file is not None:
        try:
            text = Path(from_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as ex:
            raise BadRequest(f"cannot read {from_file}: {type(ex).__name__}") from ex
    elif sys.stdin.isatty():
        text = getpass.getpass("value (not echoed): ")
    else:
        text = sys.stdin.read()
    return text.removesuffix("\n").removesuffix("\r")


def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    value = read_value(args.from_file)
    with open_secrets(settings) as service:
        info = service.set(args.tenant, args.name, value, actor=Actor.cli())
    say(f"secret {info.name} of tenant {args.tenant} is set")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_secrets(settings) as service:
        infos = service.list(args.tenant)
    records = [
        {"name": i.name, "created_at": rfc3339(i.created_at), "updated_at": rfc3339(i.updated_at)}
        for i in infos
    ]
    show(args.json, "secrets", records, ["name", "created_at", "updated_at"])
    return EXIT_OK


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    with open_secrets(settings) as service:
        service.delete(args.tenant, args.name, actor=Actor.cli())
    say(f"secret {args.name} of tenant {args.tenant} is deleted")
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    with open_secrets(settings) as service:
        rotation = service.rotate_encryption(actor=Actor.cli())
    say(
        f"re-encrypted {rotation.resealed} secrets under the current FERRY_SECRET_KEY "
        f"({rotation.current} were already, {rotation.changed} changed meanwhile); "
        "FERRY_SECRET_KEY_PREVIOUS is no longer needed"
    )
    return EXIT_OK


def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    with open_secrets(settings) as service:
        if args.rotate:
            secret = service.rotate_webhook_secret(args.tenant, actor=Actor.cli())
        else:
            secret = service.webhook_secret(args.tenant)
    if secret.previous_expires_at is not None:
        say(f"the previous secret signs too until {rfc3339(secret.previous_expires_at)}")
    say(f"webhook signing secret of tenant {args.tenant}:")
    say(secret.secret)
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `ferry secrets ACTION`."""
    secrets = sub.add_parser("secrets", help="tenants' function secrets and webhook secrets")
    ssub = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")
    setter = ssub.add_parser(
        "set", help="set a secret; the value comes from stdin or --from-file, never an argument"
    )
    setter.add_argument("--tenant", metavar="ID", required=True)
    setter.add_argument("name", metavar="NAME")
    setter.add_argument(
        "--from-file", metavar="PATH", help="read the value from this file (else stdin)"
    )
    setter.set_defaults(run=cmd_set)
    listing = ssub.add_parser("list", help="list a tenant's secrets (names and times only)")
    listing.add_argument("--tenant", metavar="ID", required=True)
    add_json_flag(listing)
    listing.set_defaults(run=cmd_list)
    delete = ssub.add_parser("delete", help="delete a tenant's secret")
    delete.add_argument("--tenant", metavar="ID", required=True)
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(run=cmd_delete)
    rotate = ssub.add_parser(
        "rotate", help="re-encrypt every stored secret under the current FERRY_SECRET_KEY"
    )
    rotate.set_defaults(run=cmd_rotate)
    webhook = ssub.add_parser(
        "webhook", help="show a tenant's webhook signing secret (last line); --rotate a new one"
    )
    webhook.add_argument("--tenant", metavar="ID", required=True)
    webhook.add_argument(
        "--rotate",
        action="store_true",
        help="make a new one; the old one signs too for FERRY_WEBHOOK_SECRET_GRACE_S",
    )
    webhook.set_defaults(run=cmd_webhook)
