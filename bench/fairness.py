"""The cost of fair dispatch (docs/fairness.md): end-to-end drains with it on and off.

For each of fairness on and off (`FERRY_FAIR_DISPATCH`), and one tenant and ten: the
plan's no-ops are accepted through the runtime's `InvocationService` with no worker
running (ten tenants: spread evenly, interleaved), then the worker processes start with
the same setting; the rate is the count over the store's own window, first `started_at`
to last `finished_at`, as in the main drain. Each run has its own workers, stopped after.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from bench import ferry_run
from bench.infra import CpuMeter, processes
from bench.plan import Plan

#: (figure key, fair dispatch on, tenants)
RUNS = (
    ("fair_on_1", True, 1),
    ("fair_off_1", False, 1),
    ("fair_on_10", True, 10),
    ("fair_off_10", False, 10),
)


def _accept(runtime: Any, tenants: list[str], count: int, threads: int = 8) -> None:
    next_index = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                n = next(next_index, None)
            if n is None:
                return
            runtime.invocations.accept(
                tenant_id=tenants[n % len(tenants)],
                function=ferry_run.FUNCTION,
                payload={},
                trigger="cli",
            )

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: work(), range(threads)))


def run(deployment: ferry_run.FerryDeployment, plan: Plan, *, say: Any) -> dict[str, Any]:
    """Each run's drain: `figures` (rate per run, and on / off per tenant count) and details."""
    runtime = deployment.runtime()
    try:
        runtime.store.migrate()
    finally:
        runtime.close()
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for key, fair, count in RUNS:
        setting = "1" if fair else "0"
        runtime = deployment.runtime(fair_dispatch=setting)
        try:
            ferry_run.clear(runtime)
            tenants = [f"fair-{n}" for n in range(count)]
            for tenant in tenants:
                if tenant not in {t.id for t in runtime.store.tenants.list()}:
                    runtime.store.tenants.create(tenant)
            say(f"ferry: fairness {'on' if fair else 'off'}, {count} tenant(s): accepting")
            _accept(runtime, tenants, plan.fairness_invocations)
            with processes(deployment.log_dir) as procs:
                workers = ferry_run.start_workers(
                    procs, deployment, plan, fair_dispatch=setting, name=key
                )
                with CpuMeter({"workers": [w.pid for w in workers]}) as cpu:
                    drain = ferry_run.drain(
                        runtime, plan.fairness_invocations, plan.drain_timeout_s
                    )
            drain["cpu_ms_per_invocation"] = cpu.per_item_ms(plan.fairness_invocations)
            figures[key] = drain["rate"]
            details[key] = drain
            say(f"ferry: fairness {key}: {drain['rate']:.0f}/s")
        finally:
            runtime.close()
    for count in (1, 10):
        on, off = figures.get(f"fair_on_{count}"), figures.get(f"fair_off_{count}")
        if on and off:
            figures[f"fair_cost_{count}"] = 100 * (1 - on / off)
    return {"figures": figures, "details": details}
