"""Leases: how long a worker's claim holds an invocation before the sweep takes it back."""

from __future__ import annotations

from collections.abc import Callable

from runtime.registry import Registry
from runtime.settings import Settings


def lease_for(registry: Registry, settings: Settings) -> Callable[[str], float]:
    """A function's lease in seconds: its timeout plus `FERRY_LEASE_GRACE_S`.

    A worker that dies mid-run holds the invocation until the lease ends; the sweep then
    records the attempt as lost and runs the invocation again.
    """

    def lease_s(function_name: str) -> float:
        timeout = (
            registry.get(function_name).timeout
            if function_name in registry
            else settings.default_timeout_s
        )
        return timeout + settings.lease_grace_s

    return lease_s
