"""How big a run is: the full one (about 8 minutes) or `--quick` (about 3)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Plan:
    #: Worker processes and threads per process, the same for every system.
    processes: int = 2
    threads: int = 8
    #: Closed-loop HTTP connections (and client threads for the reference enqueue loops).
    connections: int = 16
    warmup_s: float = 3.0
    accept_s: float = 15.0
    #: The open loop's steady rate (requests per second) and its length.
    rate: int = 200
    paced_s: float = 15.0
    #: No-op invocations drained end to end.
    invocations: int = 20_000
    drain_timeout_s: float = 400.0
    #: Single invocations on an idle system, and the pause before each (seconds).
    idle_samples: int = 60
    idle_pause_s: tuple[float, float] = (0.3, 0.7)
    #: No-ops drained per run of the fairness rows (four runs: on/off x 1/10 tenants).
    fairness_invocations: int = 10_000


FULL = Plan()
QUICK = Plan(
    warmup_s=1.0,
    accept_s=5.0,
    paced_s=5.0,
    invocations=5_000,
    drain_timeout_s=120.0,
    idle_samples=20,
    fairness_invocations=2_000,
)
