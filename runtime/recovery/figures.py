"""The recovery's own figures: how the sweep and a worker's lease keeper fare.

Built by `runtime.metrics.Metrics` when a process first sweeps or renews a lease, so a
process that never does reports none of them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class SweepMetrics:
    """How the sweep (`runtime.recovery.sweeper.SweepThread`) fares in this process.

    Built only in processes that sweep: a web process would otherwise report a last
    success of 0, "never", beside the workers' figures.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        # The newest of the host's processes counts (`max`): one sweeper is enough, and an
        # exited process's older timestamp cannot hide a newer one.
        self.last_success = Gauge(
            "ferry_sweep_last_success_timestamp_seconds",
            "Unix time the last sweep completed (the newest of this host's processes).",
            multiprocess_mode="max",
            registry=registry,
        )
        self.failures = Counter(
            "ferry_sweep_failures",
            "Sweeps that failed (each logged as sweep_failed, with its traceback).",
            registry=registry,
        )
        self.reclaimed = Counter(
            "ferry_sweep_reclaimed_attempts",
            "Attempts whose lease lapsed (their worker died or hung), taken back by the sweep.",
            registry=registry,
        )
        self.removed = Counter(
            "ferry_retention_removed_invocations",
            "Finished invocations removed by retention (FERRY_RETENTION_*).",
            registry=registry,
        )


class LeaseMetrics:
    """How a worker process's lease keeper (`runtime.recovery.leases`) fares."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.renewed = Counter(
            "ferry_lease_renewals",
            "Leases of running attempts renewed (one per attempt per renewal round).",
            registry=registry,
        )
        self.lapsed = Counter(
            "ferry_lease_lapses",
            "Running attempts whose lease was left to lapse: past their timeout plus grace.",
            registry=registry,
        )
        self.released = Counter(
            "ferry_leases_released",
            "Leases given up by a stopping worker, so the sweep runs their attempts again.",
            registry=registry,
        )
