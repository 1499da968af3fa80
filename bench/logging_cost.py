"""`python -m bench.logging_cost [--calls N]`: what one hot-path log line costs.

Logging is configured the way every Ferry process configures it
(`runtime.logs.configure_logging`, JSON lines, level info) into /dev/null, and each case
writes N lines the way the hot path writes them: the gateway's `invocation_accepted` and
`http_request` through a module-level logger with the request's fields bound in the
context, the worker's `attempt_started` through the attempt's bound `ctx.log` (with and
without a secret read by the attempt), and a `debug` line the level filters out. It
prints the process's CPU time per call in microseconds (CPU, not wall time, and the best
of `--repeat` rounds: on a shared machine the wall time mostly measures the others) and
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from runtime.context import current_context
from runtime.logs import configure_logging
from runtime.secrets.values import SecretValues
from runtime.settings import Settings

FIELDS = {
    "tenant_id": "t_" + uuid.uuid4().hex[:12],
    "invocation_id": uuid.uuid4().hex,
    "function": "bench_noop",
}


def _cases(log: Any) -> dict[str, Callable[[], None]]:
    """Each case: a callable writing one line, as the hot path does."""
    bound = structlog.get_logger("ferry.function").bind(
        **FIELDS, request_id=uuid.uuid4().hex, attempt=1
    )
    created = datetime.now(UTC)

    def accepted() -> None:
        log.info("invocation_accepted", **FIELDS, trigger="api", status="queued", at=created)

    def http_request() -> None:
        log.info(
            "http_request",
            method="POST",
            route="/v1/functions/{name}/invocations",
            status=202,
            duration_ms=1.3,
            request_id=FIELDS["invocation_id"],
            tenant_id=FIELDS["tenant_id"],
        )

    def attempt_started() -> None:
        bound.info("attempt_started")

    def filtered() -> None:
        log.debug("claim_detail", **FIELDS, rows=1)

    return {
        "gateway invocation_accepted": accepted,
        "gateway http_request": http_request,
        "worker attempt_started": attempt_started,
        "worker attempt_started, a secret in use": attempt_started,
        "debug line, filtered out": filtered,
    }


class _SecretContext:
    """Stands in for the attempt's `Context`: one secret read, as `ctx.secrets` records it."""

    def __init__(self) -> None:
        self.secrets = SecretValues({"crm_token": "s3cr3t-value-of-the-tenant"}, ("crm_token",))

    def secrets_in_use(self) -> SecretValues:
        return self.secrets


def _time(call: Callable[[], None], calls: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, time.process_time() - started)
    return best / calls * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.logging_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000, help="lines per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best is shown")
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as sink:
        configure_logging(Settings.from_env(log_level="info", log_format="json"), stream=sink)
        log = structlog.get_logger("bench.logging_cost")
        structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex)
        print(f"load average {os.getloadavg()[0]:.2f}; {args.calls:,} calls x {args.repeat}")
        for name, call in _cases(log).items():
            token = None
            if "secret" in name:
                token = current_context.set(_SecretContext())  # type: ignore[arg-type]
            try:
                call()  # first use: a cached logger is built here, outside the timing
                print(f"{name:<42} {_time(call, args.calls, args.repeat):7.1f} us CPU/call")
            finally:
                if token is not None:
                    current_context.reset(token)
        structlog.contextvars.clear_contextvars()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
