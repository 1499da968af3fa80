"""The floor under a single accept: gunicorn and Falcon alone (`bench/floor_app.py`).

Issue 15 asks for 3,000 single accepts/s and at most 0.5 ms of the gateway's CPU per
accept. This phase measures what the contract's HTTP stack costs with nothing behind it:
the same gunicorn config (gthread, the same processes and threads), the same load
generator, connections and duration as Ferry's closed-loop accept, and the gunicorn
process tree's CPU divided by the answered requests. Ferry's accept cannot be cheaper
than this floor; the difference is what Ferry's own code (middleware, validation, the
store's commit, the log lines) adds.
"""

from __future__ import annotations

from typing import Any

from bench import loadgen
from bench.infra import free_port, processes, start_gunicorn
from bench.plan import Plan


def run(deployment: Any, plan: Plan, *, say: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures (`floor_accept_rate`, `floor_accept_cpu_ms`) and the phase's details."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/functions/bench_noop/invocations"
    with processes(deployment.log_dir) as procs:
        start_gunicorn(procs, "gunicorn-floor", "bench.floor_app:app", deployment.env(), port)
        loadgen.closed_loop_http(
            url, "unused", "{}", connections=plan.connections, duration_s=plan.warmup_s
        )
        say(f"floor: closed-loop POSTs to gunicorn + Falcon alone for {plan.accept_s:.0f}s")
        accept = loadgen.closed_loop_http_cpu(
            url,
            "unused",
            "{}",
            connections=plan.connections,
            duration_s=plan.accept_s,
            server_pid=procs.started[0].pid,
        )
    figures = {
        "floor_accept_rate": accept["rate"],
        "floor_accept_cpu_ms": accept["cpu_ms_per_request"].get("gateway"),
    }
    return figures, accept
