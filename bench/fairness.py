"""The cost of fair dispatch (docs/fairness.md): end-to-end drains with it on and off.

For each of fairness on and off (`FERRY_FAIR_DISPATCH`), and one tenant and ten: the
plan's no-ops are accepted through the runtime's `InvocationService` with no worker
running (ten tenants: spread evenly, interleaved), then the worker processes start with
the same setting. The drain rate is the count over the store's own window, first
`started_at` to last `finished_at`, as in the main drain; the end-to-end rate is the count
over the accept's time plus that window. The cost of fairness is taken end to end: with
it off the accept sends every invocation to the broker; with it on the accept holds all
but a window of them and the drain sends them as places free, so a drain-only figure
would charge fairness for sends that fairness-off made before the clock started. Each run
has its own workers, stopped after.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
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
            accept_started = time.monotonic()
            _accept(runtime, tenants, plan.fairness_invocations)
            accept_s = time.monotonic() - accept_started
            with processes(deployment.log_dir) as procs:
                workers = ferry_run.start_workers(
                    procs, deployment, plan, fair_dispatch=setting, name=key
                )
                with CpuMeter({"workers": [w.pid for w in workers]}) as cpu:
                    drain = ferry_run.drain(
                        runtime, plan.fairness_invocations, plan.drain_timeout_s
                    )
            drain["cpu_ms_per_invocation"] = cpu.per_item_ms(plan.fairness_invocations)
            drain["accept_s"] = accept_s
            drain["end_to_end_rate"] = plan.fairness_invocations / (accept_s + drain["window_s"])
            figures[key] = drain["end_to_end_rate"]
            details[key] = drain
            say(
                f"ferry: fairness {key}: accept {accept_s:.1f} s, drain {drain['rate']:.0f}/s, "
                f"accept+drain {drain['end_to_end_rate']:.0f}/s"
            )
        finally:
            runtime.close()
    for count in (1, 10):
        on, off = figures.get(f"fair_on_{count}"), figures.get(f"fair_off_{count}")
        if on and off:
            figures[f"fair_cost_{count}"] = 100 * (1 - on / off)
        on_drain, off_drain = details.get(f"fair_on_{count}"), details.get(f"fair_off_{count}")
        if on_drain and off_drain:
            figures[f"fair_drain_cost_{count}"] = 100 * (1 - on_drain["rate"] / off_drain["rate"])
    return {"figures": figures, "details": details}
