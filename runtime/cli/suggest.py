""" "Did you mean" for a tenant or a schedule a command could not find.

Functions suggest their own names (`Registry.get`, for the API too); tenants and
schedules are looked up here, after the command failed, so that no command pays for it
unless it is needed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from runtime.cli.connect import open_runtime, open_tenants
from runtime.errors import FerryError, ScheduleNotFound, TenantNotFound
from runtime.settings import Settings
from runtime.suggestions import did_you_mean


def suggestion(ex: FerryError, args: argparse.Namespace, settings: Settings) -> str:
    """`; did you mean 'x'?` for a tenant or schedule `args` names that `ex` did not find."""
    if "did you mean" in ex.message:
        return ""
    try:
        if isinstance(ex, TenantNotFound):
            return _closest(_named(args, "tenant", "tenant_id"), _tenant_ids(settings))
        if isinstance(ex, ScheduleNotFound):
            return _closest(_named(args, "schedule_id"), _schedule_ids(settings))
    except FerryError:  # the lookup failed too: the error alone says enough
        pass
    return ""


def _named(args: argparse.Namespace, *attributes: str) -> str | None:
    for attribute in attributes:
        value = getattr(args, attribute, None)
        if isinstance(value, str):
            return value
    return None


def _closest(name: str | None, known: Iterable[str]) -> str:
    return "" if name is None else did_you_mean(name, known)


def _tenant_ids(settings: Settings) -> list[str]:
    with open_tenants(settings) as service:
        return [tenant.id for tenant in service.list()]


def _schedule_ids(settings: Settings) -> list[str]:
    with open_runtime(settings) as runtime:
        return list(runtime.schedules.book.ids())
