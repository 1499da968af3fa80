"""How many `?wait` requests may hold a thread at once: per tenant and per process.

A gateway thread that waits for an invocation serves nobody else, so one tenant's waits
could take every thread and slow every other tenant. `WaitSlots` bounds them; a request
that finds no free slot is answered at once instead (202 with `Location`: the client
polls), which is an answer the API gives anyway when a wait runs out.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class WaitSlots:
    """Counters of held waits, per tenant and in all, under one lock (thread-safe)."""

    def __init__(self, *, per_tenant: int, per_process: int) -> None:
        if per_tenant < 0 or per_process < 0:
            raise ValueError("wait slots cannot be negative")
        self.per_tenant = per_tenant
        self.per_process = per_process
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._total = 0

    def try_acquire(self, tenant_id: str) -> bool:
        """Take a slot for `tenant_id` if both limits allow it; never blocks."""
        with self._lock:
            held = self._held.get(tenant_id, 0)
            if held >= self.per_tenant or self._total >= self.per_process:
                return False
            self._held[tenant_id] = held + 1
            self._total += 1
            return True

    def release(self, tenant_id: str) -> None:
        """Give back a slot taken by `try_acquire`."""
        with self._lock:
            held = self._held.get(tenant_id, 0)
            if held <= 0:
                raise RuntimeError(f"no wait slot of tenant {tenant_id!r} is held")
            # Drop a tenant at zero, so the map holds only tenants waiting now.
            if held == 1:
                del self._held[tenant_id]
            else:
                self._held[tenant_id] = held - 1
            self._total -= 1

    @contextlib.contextmanager
    def hold(self, tenant_id: str) -> Iterator[bool]:
        """A slot for the block if one is free (yields True), else yields False at once."""
        acquired = self.try_acquire(tenant_id)
        try:
            yield acquired
        finally:
            if acquired:
                self.release(tenant_id)

    def held(self, tenant_id: str | None = None) -> int:
        """Waits held now: of one tenant, or in all."""
        with self._lock:
            return self._total if tenant_id is None else self._held.get(tenant_id, 0)
