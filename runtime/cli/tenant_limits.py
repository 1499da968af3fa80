"""`ferry tenants set-limits ID [...]` and `ferry tenants show ID`: a tenant's limits.

A limit given as `default` follows the deployment's `FERRY_DEFAULT_*`; `--reset` returns
every limit to its default. 0 is "unlimited" for the rate, the concurrency and the
waiting bound. Both commands print the tenant's limits with where each comes from, and
its waiting and running counts.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from runtime.cli.connect import open_store
from runtime.cli.output import EXIT_OK, add_json_flag, print_json, say
from runtime.services.limits import COLUMNS, LimitService, TenantLimitsReport
from runtime.services.tenants import TenantService
from runtime.settings import Settings
from runtime.store.limits import LimitDefaults
from runtime.store.views import TenantView, rfc3339

#: `--rate` units: seconds per unit.
RATE_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
#: How each limit is shown.
UNITS = {"rate_per_s": "/s", "burst": "", "concurrency": "", "max_waiting": "", "weight": ""}


def rate(text: str) -> float | None:
    """`--rate`: `N/s`, `N/min`, `N/h` or a bare N per second; 0 unlimited; `default`."""
    if text == "default":
        return None
    number, _, unit = text.partition("/")
    try:
        value = float(number) / RATE_UNITS[unit or "s"]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate such as 10/s, 600/min, 0 (unlimited) or default"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("a rate is 0 (unlimited) or more")
    return value


def whole(text: str) -> int | None:
    """A whole-number limit, or `default` (None)."""
    if text == "default":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or default") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a limit is 0 (unlimited) or more")
    return value


@contextlib.contextmanager
def open_limits(settings: Settings) -> Iterator[tuple[LimitService, TenantService]]:
    with open_store(settings) as store:
        yield LimitService(store, LimitDefaults.from_settings(settings)), TenantService(store)


def cmd_set_limits(args: argparse.Namespace, settings: Settings) -> int:
    # Options not given are absent from `args` (SUPPRESS): those limits keep their value.
    changes = {name: vars(args)[name] for name in COLUMNS if name in vars(args)}
    if args.reset:
        changes = {**dict.fromkeys(COLUMNS), **changes}
    with open_limits(settings) as (limits, tenants):
        if changes:
            limits.set(args.tenant_id, changes)
        _print(tenants.get(args.tenant_id), limits.report(args.tenant_id), args.json)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_limits(settings) as (limits, tenants):
        _print(tenants.get(args.tenant_id), limits.report(args.tenant_id), args.json)
    return EXIT_OK


def _print(tenant: TenantView, report: TenantLimitsReport, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "id": tenant.id,
                "name": tenant.name,
                "status": tenant.status,
                "created_at": rfc3339(tenant.created_at),
                **report.as_dict(),
            }
        )
        return
    say(
        f"tenant {tenant.id} ({tenant.name}): {tenant.status}, created {rfc3339(tenant.created_at)}"
    )
    say(f"  waiting: {report.counts.waiting}  running: {report.counts.running}")
    say("  limits (0: unlimited):")
    for name in COLUMNS:
        value: Any = getattr(report.effective, name)
        source = "default" if getattr(report.own, name) is None else "tenant"
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        say(f"    {name}: {shown}{UNITS[name]} ({source})")


def add_actions(tsub: Any) -> None:
    """Add `set-limits` and `show` to `ferry tenants`."""
    limits = tsub.add_parser(
        "set-limits",
        help="set the tenant's accept rate, concurrency, waiting bound and weight",
        description="Limits of one tenant. 0 is unlimited (rate, concurrency, max-waiting); "
        "`default` follows FERRY_DEFAULT_*; --reset returns every limit to its default. "
        "Other gateway processes apply a change within FERRY_LIMITS_CACHE_S.",
    )
    limits.add_argument("tenant_id", metavar="ID")
    options = (
        ("--rate", "rate_per_s", rate, "N/s", "accepts per second (N/s, N/min, N/h)"),
        ("--burst", "burst", whole, "N", "accepts at once after a quiet spell"),
        ("--concurrency", "concurrency", whole, "N", "invocations running at once"),
        ("--max-waiting", "max_waiting", whole, "N", "invocations queued/scheduled/retrying"),
        ("--weight", "weight", whole, "N", "share of worker slots in fair dispatch (1+)"),
    )
    for flag, dest, parse, metavar, text in options:
        limits.add_argument(
            flag, dest=dest, type=parse, default=argparse.SUPPRESS, metavar=metavar, help=text
        )
    limits.add_argument("--reset", action="store_true", help="every limit not given: default")
    add_json_flag(limits)
    limits.set_defaults(run=cmd_set_limits)
    show = tsub.add_parser("show", help="a tenant, its limits and its waiting and running work")
    show.add_argument("tenant_id", metavar="ID")
    add_json_flag(show)
    show.set_defaults(run=cmd_show)
