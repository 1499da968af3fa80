"""`ferry invoke`: invoke a function as a tenant (trigger `cli`), optionally waiting for it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from runtime.cli.connect import open_runtime
from runtime.cli.invoke_batch import cmd_invoke_batch
from runtime.cli.output import (
    EXIT_OK,
    EXIT_STILL_RUNNING,
    EXIT_USER_ERROR,
    print_json,
    warn,
)
from runtime.errors import BadRequest, IdempotencyConflict
from runtime.settings import Settings


def _parse_payload(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as ex:
        raise BadRequest(f"--data is not valid JSON: {ex}") from ex


def _printable_ascii(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def cmd_invoke(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch is not None:
        return cmd_invoke_batch(args, settings)
    if args.data is None:
        raise BadRequest("give the input with --data JSON, or many with --batch FILE.jsonl")
    payload = _parse_payload(args.data)
    if args.key is not None and not (0 < len(args.key) <= 255 and _printable_ascii(args.key)):
        raise BadRequest("--key takes 1 to 255 printable ASCII characters")
    if args.wait is not None and args.wait < 0:
        raise BadRequest("--wait takes a number of seconds, 0 or more")
    with open_runtime(settings) as runtime:
        try:
            invocation, created = runtime.invocations.accept(
                tenant_id=args.tenant,
                function=args.name,
                payload=payload,
                idempotency_key=args.key,
                trigger="cli",
            )
        except IdempotencyConflict as ex:
            # The service speaks of the HTTP header; here the key came from `--key`.
            raise IdempotencyConflict(
                f"--key {args.key!r} was used before with different --data for {args.name} "
                f"in tenant {args.tenant}; give the same --data to get that invocation "
                "back, or another --key"
            ) from ex
        if not created:
            warn(
                f"replayed: idempotency key {invocation.idempotency_key!r} names an "
                "existing invocation; it was not invoked again"
            )
        elif settings.embedded_broker and not invocation.finished:
            warn(
                "note: the in-process broker (FERRY_BROKER_URL=memory://) lives only inside "
                "one process; the invocation is queued in the store and runs when `ferry dev` "
                "or a `ferry worker` on the same store picks it up"
            )
        if args.wait:
            invocation = runtime.invocations.wait(invocation, args.wait)
        shown = runtime.invocations.get(invocation.id, args.tenant)
        invocation = shown.invocation
        print_json({**invocation.as_dict(), "attempt_log": [a.as_dict() for a in shown.attempts]})
    if invocation.status in ("failed", "cancelled"):
        return EXIT_USER_ERROR
    if args.wait and not invocation.finished:
        warn(f"the invocation is still {invocation.status} after {args.wait:g} s")
        return EXIT_STILL_RUNNING
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `ferry invoke`."""
    invoke = sub.add_parser("invoke", help="invoke a function as a tenant (trigger `cli`)")
    invoke.add_argument("name", metavar="NAME", help="the function")
    invoke.add_argument("--tenant", required=True, metavar="ID")
    given = invoke.add_mutually_exclusive_group(required=True)
    given.add_argument("--data", metavar="JSON", help="the input, as JSON")
    given.add_argument(
        "--batch",
        metavar="FILE.jsonl",
        help="one JSON input per line (- for stdin), sent in batches of 1000; prints a JSON "
        "line per input (its id, or its errors); exit 1 if any failed",
    )
    invoke.add_argument("--key", metavar="K", help="idempotency key (default: the invocation id)")
    invoke.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="wait up to S seconds for it to finish; exit 1 if it failed, 3 if it is still going",
    )
    invoke.set_defaults(run=cmd_invoke)
