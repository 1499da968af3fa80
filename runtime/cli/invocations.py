"""`ferry invocations list|show|cancel|retry|tail`: read and operate invocations.

The CLI acts as an operator: across every tenant unless `--tenant` names one. `tail`
follows the store like `tail -f`: it prints the last few invocations, then each new one
and each change of status of those it printed that had not finished, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.cli.connect import open_runtime
from runtime.cli.output import EXIT_OK, add_json_flag, cell, print_json, say, table, warn
from runtime.errors import NotFound
from runtime.services.audit import Actor
from runtime.services.invocations import MAX_PAGE, InvocationService
from runtime.services.tenants import TenantService
from runtime.settings import Settings
from runtime.store.models import Status
from runtime.store.views import InvocationView, rfc3339
from runtime.suggestions import did_you_mean

#: `--since 90s`, `10m`, `2h`, `7d`.
_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Unfinished invocations `tail` keeps watching; past this the oldest are let go.
MAX_WATCHED = 1000
COLUMNS = ["ID", "FUNCTION", "TENANT", "STATUS", "TRIGGER", "ATTEMPTS", "CREATED", "DURATION"]
#: How `tail` waits between looks at the store; a test replaces it.
pause: Callable[[float], None] = time.sleep


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: a time ago (`90s`, `10m`, `2h`, `7d`) or an RFC 3339 time with its offset."""
    ago = _AGO.fullmatch(text.strip())
    if ago:
        seconds = float(ago.group(1)) * _UNITS[ago.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time ago (90s, 10m, 2h, 7d) nor an RFC 3339 time with "
            "its offset (2026-11-30T09:00:00Z)"
        )
    return when.astimezone(UTC)


def _row(view: InvocationView) -> list[str]:
    duration = view.duration_ms
    return [
        view.id,
        view.function,
        view.tenant_id,
        view.status,
        view.trigger,
        str(view.attempts),
        cell(rfc3339(view.created_at)),
        "" if duration is None else f"{duration} ms",
    ]


def _check_filters(args: argparse.Namespace, runtime: Any) -> None:
    """Refuse an unknown tenant; note a function this deployment does not have."""
    if args.tenant is not None:
        TenantService(runtime.store).get(args.tenant)
    if args.function is not None and args.function not in runtime.registry:
        known = [fn.name for fn in runtime.registry]
        warn(
            f"note: this deployment has no function named {args.function!r}"
            f"{did_you_mean(args.function, known)}; listing its invocations anyway"
        )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_runtime(settings) as runtime:
        _check_filters(args, runtime)
        page = runtime.invocations.list(
            args.tenant,
            function=args.function,
            status=args.status,
            limit=args.limit,
            cursor=args.cursor,
            since=args.since,
        )
    if args.json:
        print_json(
            {
                "invocations": [v.as_dict() for v in page.invocations],
                "next_cursor": page.next_cursor,
            }
        )
        return EXIT_OK
    table([COLUMNS] + [_row(v) for v in page.invocations])
    if page.next_cursor is not None:
        warn(f"more: add --cursor {page.next_cursor}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_runtime(settings) as runtime:
        shown = runtime.invocations.get(args.invocation_id, args.tenant)
    record = {**shown.invocation.as_dict(), "attempt_log": [a.as_dict() for a in shown.attempts]}
    if args.json:
        print_json(record)
        return EXIT_OK
    for name, value in record.items():
        if name in ("attempt_log", "result", "error"):
            continue
        say(f"{name}: {'' if value is None else value}")
    for name in ("result", "error"):
        if record[name] is not None:
            say(f"{name}: {json.dumps(record[name])}")
    say("attempts:" if shown.attempts else "attempts: none yet")
    for attempt in shown.attempts:
        error = attempt.error or {}
        failure = f"  {error.get('type')}: {error.get('message')}" if error else ""
        say(
            f"  #{attempt.number}  {rfc3339(attempt.started_at)}  "
            f"{attempt.outcome or 'running'}{failure}"
        )
    return EXIT_OK


def _acted(args: argparse.Namespace, view: InvocationView, done: str) -> None:
    if args.json:
        print_json(view.as_dict())
    else:
        say(f"invocation {view.id} ({view.function}, tenant {view.tenant_id}) {done}")


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    with open_runtime(settings) as runtime:
        view = runtime.invocations.cancel(args.invocation_id, args.tenant, actor=Actor.cli())
    _acted(args, view, "is cancelled")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    with open_runtime(settings) as runtime:
        view = runtime.invocations.retry(args.invocation_id, args.tenant, actor=Actor.cli())
    _acted(args, view, "is queued again")
    if settings.embedded_broker:
        warn(
            "note: the in-process broker lives only inside one process; it runs when "
            "`ferry dev` or a `ferry worker` on the same store picks it up"
        )
    return EXIT_OK


class Follower:
    """What `tail` reports: invocations as they are created, and their later changes."""

    def __init__(
        self,
        service: InvocationService,
        *,
        tenant_id: str | None = None,
        function: str | None = None,
    ) -> None:
        self.service = service
        self.tenant_id = tenant_id
        self.function = function
        #: The newest creation time reported; new invocations are looked for from it on.
        self.since: datetime | None = None
        #: Ids reported as new whose creation time is `since` (a second look sees them again).
        self._at_since: set[str] = set()
        #: Unfinished invocations reported, and the status last reported for each.
        self.watched: dict[str, str] = {}

    def start(self, *, backlog: int, since: datetime | None) -> list[InvocationView]:
        """The first report: invocations created from `since`, else the last `backlog`."""
        if since is not None:
            self.since = since
            return self.poll()
        newest = self.service.list(self.tenant_id, function=self.function, limit=max(backlog, 1))
        found = list(reversed(newest.invocations))
        self.since = found[-1].created_at if found else datetime.now(UTC)
        for view in found:
            self._note(view)
        return found[-backlog:] if backlog else []

    def poll(self) -> list[InvocationView]:
        """New invocations (oldest first), then each watched one whose status changed."""
        events = []
        for view in self._created():
            if view.id not in self._at_since:
                events.append(view)
                self._note(view)
        for invocation_id, status in list(self.watched.items()):
            try:
                view = self.service.get(invocation_id, self.tenant_id).invocation
            except NotFound:  # deleted by retention meanwhile
                del self.watched[invocation_id]
                continue
            if view.status != status:
                events.append(view)
                self._note(view)
        return events

    def _created(self) -> Iterator[InvocationView]:
        """Invocations created from `since` on, oldest first."""
        pages: list[list[InvocationView]] = []
        cursor = None
        while True:
            page = self.service.list(
                self.tenant_id,
                function=self.function,
                since=self.since,
                limit=MAX_PAGE,
                cursor=cursor,
            )
            pages.append(page.invocations)
            cursor = page.next_cursor
            if cursor is None:
                break
        for page_views in reversed(pages):
            yield from reversed(page_views)

    def _note(self, view: InvocationView) -> None:
        """Remember `view` as reported, in the status it has."""
        if self.since is None or view.created_at > self.since:
            self.since = view.created_at
            self._at_since.clear()
        if view.created_at == self.since:
            self._at_since.add(view.id)
        if view.finished:
            self.watched.pop(view.id, None)
        else:
            self.watched[view.id] = view.status
            while len(self.watched) > MAX_WATCHED:
                del self.watched[next(iter(self.watched))]


def _tail_line(view: InvocationView) -> str:
    when = view.finished_at or view.started_at or view.created_at
    duration = "" if view.duration_ms is None else f"  {view.duration_ms} ms"
    error = f"  {view.error.get('type')}: {view.error.get('message')}" if view.error else ""
    return (
        f"{rfc3339(when)}  {view.id}  {view.function}  {view.tenant_id}  "
        f"{view.status}  attempts {view.attempts}{duration}{error}"
    )


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    def report(views: list[InvocationView]) -> None:
        for view in views:
            if args.status is not None and view.status != args.status:
                continue
            say(json.dumps(view.as_dict()) if args.json else _tail_line(view))

    with open_runtime(settings) as runtime:
        _check_filters(args, runtime)
        follower = Follower(runtime.invocations, tenant_id=args.tenant, function=args.function)
        try:
            report(follower.start(backlog=args.lines, since=args.since))
            while True:
                pause(args.interval)
                report(follower.poll())
        except KeyboardInterrupt:
            return EXIT_OK


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--function", metavar="NAME", help="only this function's")
    parser.add_argument("--status", choices=list(Status), help="only those in this status")
    parser.add_argument("--tenant", metavar="ID", help="only this tenant's (default: every one)")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only those created since: a time ago (90s, 10m, 2h, 7d) or an RFC 3339 time",
    )


def add_commands(sub: Any) -> None:
    """Add `ferry invocations ACTION`."""
    invocations = sub.add_parser(
        "invocations", help="list, show, cancel, retry and follow invocations (every tenant's)"
    )
    actions = invocations.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="invocations, newest first")
    _filters(listing)
    listing.add_argument(
        "--limit",
        type=int,
        default=20,
        metavar="N",
        help=f"at most N (1 to {MAX_PAGE}; default 20)",
    )
    listing.add_argument("--cursor", metavar="C", help="continue a listing (its `more:` note)")
    add_json_flag(listing)
    listing.set_defaults(run=cmd_list)

    for action, command, text in (
        ("show", cmd_show, "one invocation with its attempt log"),
        ("cancel", cmd_cancel, "cancel an invocation that is not running yet"),
        ("retry", cmd_retry, "queue a failed or cancelled invocation again"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("invocation_id", metavar="ID")
        parser.add_argument("--tenant", metavar="ID", help="act only within this tenant")
        parser.add_argument("--json", action="store_true", help="print the invocation as JSON")
        parser.set_defaults(run=command)

    tail = actions.add_parser(
        "tail",
        help="follow new and finishing invocations until Ctrl-C, like tail -f",
        description="Print the last invocations, then each new one and each change of "
        "status of those printed, as the store sees them, until Ctrl-C.",
    )
    _filters(tail)
    tail.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="print the last N first (default 10; ignored with --since)",
    )
    tail.add_argument(
        "--interval", type=_positive, default=1.0, metavar="S", help="look every S seconds"
    )
    tail.add_argument("--json", action="store_true", help="print one JSON object a line")
    tail.set_defaults(run=cmd_tail)
