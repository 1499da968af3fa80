"""Leases: a claim holds its invocation for a short lease that its worker keeps renewing.

A claim gives its attempt `FERRY_LEASE_S` (30 s). A `LeaseKeeper` thread in each worker
process renews the leases of every attempt the process runs, with one statement every
third of that. So the attempts of a worker that dies (SIGKILL, a lost host) lapse within
`lease_s` and the sweep runs them again, whatever their function's timeout. An attempt
past its timeout plus `FERRY_LEASE_GRACE_S` is no longer renewed, so one the time limit
failed to stop is taken back too. A worker the heartbeat finds lost has its leases ended
at once (`runtime.store.workers`), and a draining worker that runs out of grace releases
what it still runs (`LeaseKeeper.release_all`), so those run elsewhere immediately.

The statements, and why a renewal never revives a lease the sweep took back, are in
`runtime.store.leases`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from runtime.metrics import Metrics
from runtime.registry import Registry
from runtime.settings import Settings
from runtime.store.claims import Claimed
from runtime.store.db import Clock
from runtime.store.leases import AttemptKey, Leases

log = structlog.get_logger("ferry.leases")


@dataclasses.dataclass(frozen=True)
class LeaseOptions:
    """How long a lease lasts unless renewed, and how long past its timeout it is renewed."""

    lease_s: float = 30.0
    grace_s: float = 10.0

    def __post_init__(self) -> None:
        if self.lease_s <= 0 or self.grace_s < 0:
            raise ValueError("lease_s must be positive and grace_s not negative")

    @property
    def renew_every_s(self) -> float:
        """A third of the lease: two renewals in a row may fail before it lapses."""
        return self.lease_s / 3

    @classmethod
    def from_settings(cls, settings: Settings) -> LeaseOptions:
        """Read `FERRY_LEASE_S` and `FERRY_LEASE_GRACE_S`."""
        return cls(lease_s=settings.lease_s, grace_s=settings.lease_grace_s)


def timeouts(registry: Registry, settings: Settings) -> Callable[[str], float]:
    """A function's timeout in seconds; the default one for a function not in `registry`."""

    def timeout_s(function_name: str) -> float:
        if function_name in registry:
            return registry.get(function_name).timeout
        return settings.default_timeout_s

    return timeout_s


@dataclasses.dataclass
class _Held:
    """An attempt this process runs: renewed until `deadline` while `renewing`."""

    deadline: datetime
    renewing: bool = True


class LeaseKeeper:
    """Renews the leases of the attempts one worker process runs; releases them at exit.

    The claim middleware tells it of each attempt it won (`hold`) and of its end (`drop`).
    """

    def __init__(
        self,
        leases: Leases,
        worker_id: str,
        *,
        timeout_s: Callable[[str], float],
        options: LeaseOptions,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.leases = leases
        self.worker_id = worker_id
        self.timeout_s = timeout_s
        self.options = options
        self.clock = clock or leases.db.clock
        self.metrics = metrics
        self._held: dict[AttemptKey, _Held] = {}
        self._lock = threading.Lock()
        #: Set by `release_all`: a claim won after it is released at once.
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, claimed: Claimed) -> bool:
        """Renew this attempt's lease from now on; False if the process is giving up its work.

        After `release_all` a claim that was in flight is released at once (the caller
        must not run it), so nothing claimed by a stopping process keeps a lease.
        """
        inv = claimed.invocation
        limit = self.timeout_s(inv.function) + self.options.grace_s
        deadline = (inv.started_at or self.clock()) + timedelta(seconds=limit)
        with self._lock:
            if not self._closed:
                self._held[(inv.id, claimed.attempt)] = _Held(deadline)
                return True
        self._release("claimed_while_stopping")
        return False

    def drop(self, claimed: Claimed) -> None:
        """The attempt ended (whatever its outcome): stop renewing its lease."""
        with self._lock:
            self._held.pop((claimed.invocation.id, claimed.attempt), None)

    def held(self) -> list[AttemptKey]:
        """The attempts this process runs now."""
        with self._lock:
            return sorted(self._held)

    def renew_once(self) -> set[AttemptKey]:
        """Renew every held attempt not past its timeout, in one statement; those renewed."""
        now = self.clock()
        with self._lock:
            if self._closed:
                return set()
            due = [k for k, h in self._held.items() if h.renewing and h.deadline > now]
            overdue = [k for k, h in self._held.items() if h.renewing and h.deadline <= now]
            for key in overdue:
                self._held[key].renewing = False
        for invocation_id, attempt in overdue:
            # The time limit did not stop it: its lease now lapses and the sweep takes it back.
            log.warning("lease_not_renewed", invocation_id=invocation_id, attempt=attempt)
        renewed = self.leases.renew(self.worker_id, due, self.options.lease_s)
        if self.metrics is not None and (renewed or overdue):
            figures = self.metrics.leases()
            figures.renewed.inc(len(renewed))
            figures.lapsed.inc(len(overdue))
        ended = [key for key in due if key not in renewed]
        with self._lock:
            # Finished just now (dropped meanwhile), or taken back: never renewed again.
            for key in ended:
                if key in self._held:
                    self._held[key].renewing = False
        return renewed

    def start(self) -> None:
        """Renew in a thread every `renew_every_s` until `stop`."""
        with self._lock:
            self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="ferry-leases", daemon=True
        )
        self._thread.start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.options.renew_every_s):
            try:
                self.renew_once()
            except Exception as ex:  # keep renewing; the next round may reach the store
                log.warning("lease_renewal_failed", error_type=type(ex).__name__, error=str(ex))

    def stop(self) -> None:
        """Stop renewing (what is still held keeps its lease until it lapses or is released)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)

    def release_all(self) -> int:
        """Give up every attempt still running here: their leases end now; how many.

        For a process that exits before they finish: the next sweep, in any process,
        runs them again instead of waiting for the leases to lapse. Renewal stops for good.
        """
        with self._lock:
            self._closed = True
            holding = bool(self._held)
        return self._release("worker_exiting") if holding else 0

    def _release(self, reason: str) -> int:
        try:
            released = self.leases.release([self.worker_id])
        except Exception as ex:  # they lapse within lease_s instead
            log.warning("lease_release_failed", error_type=type(ex).__name__, error=str(ex))
            return 0
        if released:
            log.warning("leases_released", count=released, reason=reason)
            if self.metrics is not None:
                self.metrics.leases().released.inc(released)
        return released
