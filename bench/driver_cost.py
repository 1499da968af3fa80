"""What one claim costs the worker's CPU through SQLAlchemy's Core execute and through psycopg.

    python -m bench.driver_cost [--count 1500]

Accepts `2 x count` no-ops in a new PostgreSQL database, then claims `count` of them
with `statements.CLAIM_WITH_ATTEMPT` run by SQLAlchemy (`Database.statements`) and the
other `count` with the same statement run by psycopg (`runtime.store.driver`), one at a
time in this process. Prints, per way, this process's CPU and PostgreSQL's CPU (all its
server processes) per claim, and the wall time per claim. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import timedelta

from bench.__main__ import DEFAULT_PG, DEFAULT_REDIS
from bench.ferry_run import FUNCTION
from bench.group_commit import postgres_cpu_s, store_settings
from bench.infra import pg_database, redis_namespace
from runtime.app import Runtime
from runtime.store import statements
from runtime.store.driver import DriverStatement, driver_connection


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.driver_cost", description=__doc__)
    parser.add_argument("--count", type=int, default=1500)
    args = parser.parse_args(argv)
    with pg_database(DEFAULT_PG) as url, redis_namespace(DEFAULT_REDIS) as namespace:
        runtime = Runtime(store_settings(url, namespace))
        try:
            runtime.store.migrate()
            runtime.store.tenants.create("t-bench")
            accept = runtime.invocations.accept
            ids = [
                accept(tenant_id="t-bench", function=FUNCTION, payload={})[0].id
                for _ in range(2 * args.count)
            ]
            db = runtime.store.db
            driver = DriverStatement(statements.CLAIM_WITH_ATTEMPT, db.engine)

            def params(invocation_id: str) -> dict[str, object]:
                now = db.clock()
                return {
                    "_id": invocation_id,
                    "_now": now,
                    "_lease": now + timedelta(seconds=30),
                    "_worker": "bench",
                }

            def through_sqlalchemy(invocation_id: str) -> None:
                with db.statements() as connection:
                    connection.execute(statements.CLAIM_WITH_ATTEMPT, params(invocation_id))

            def through_psycopg(invocation_id: str) -> None:
                with driver_connection(db.engine) as connection:
                    driver.first(connection, params(invocation_id))

            ways = [("SQLAlchemy Core", through_sqlalchemy), ("psycopg", through_psycopg)]
            for n, (name, claim) in enumerate(ways):
                batch = ids[n * args.count : (n + 1) * args.count]
                pg0, cpu0, wall0 = postgres_cpu_s(), time.process_time(), time.perf_counter()
                for invocation_id in batch:
                    claim(invocation_id)
                cpu = (time.process_time() - cpu0) / len(batch) * 1e6
                pg = (postgres_cpu_s() - pg0) / len(batch) * 1e6
                wall = (time.perf_counter() - wall0) / len(batch) * 1e6
                print(
                    f"{name:16s} claim: this process {cpu:6.0f} us CPU, "
                    f"PostgreSQL {pg:6.0f} us CPU, {wall:6.0f} us wall"
                )
        finally:
            runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
