"""Ferry's batch accept: closed-loop POSTs of 1,000 no-op inputs each, through gunicorn.

Each POST goes to `/v1/functions/{name}/invocations/batch`; its answer comes after the
batch is committed (one transaction) and its due invocations admitted by fair dispatch
(on, as everywhere) and sent in one Redis pipeline. The figure is invocations committed
per second: the rows the store gained over the phase, divided by its length. The
gateway's CPU is divided by the same count.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from bench import loadgen
from bench.infra import CpuMeter
from bench.plan import Plan
from runtime.app import Runtime

#: Inputs per POST: the API's most.
BATCH = 1000
#: Concurrent connections: each request carries a thousand invocations.
CONNECTIONS = 4


def _stored(runtime: Runtime) -> int:
    with runtime.store.db.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM invocations")).scalar_one())


def run(
    runtime: Runtime, gateway_pid: int, base_url: str, key: str, function: str, plan: Plan
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures (`batch_accept_rate`, `batch_accept_cpu_ms`) and the phase's details."""
    url = f"{base_url}/v1/functions/{function}/invocations/batch"
    body = json.dumps({"items": [{"input": {}} for _ in range(BATCH)]})
    connections = min(plan.connections, CONNECTIONS)
    loadgen.closed_loop_http(url, key, body, connections=connections, duration_s=plan.warmup_s)
    before = _stored(runtime)
    with CpuMeter({"gateway": [gateway_pid]}) as cpu:
        posted = loadgen.closed_loop_http(
            url, key, body, connections=connections, duration_s=plan.accept_s
        )
    committed = _stored(runtime) - before
    rate = committed / posted["seconds"] if posted.get("seconds") else None
    details = {
        **posted,
        "items_per_request": BATCH,
        "connections": connections,
        "committed": committed,
        "cpu_s": cpu.used,
        "cpu_ms_per_invocation": cpu.per_item_ms(committed),
    }
    figures = {
        "batch_accept_rate": rate,
        "batch_accept_cpu_ms": cpu.per_item_ms(committed).get("gateway"),
    }
    return figures, details
