"""What one claim costs the worker's CPU, by the way it is run.

    python -m bench.driver_cost [--count 1500] [--rounds 3]

Accepts `3 x count` no-ops in a new PostgreSQL database, then claims them one at a time
in this process with `statements.CLAIM_WITH_ATTEMPT`, a third each way: run by
SQLAlchemy (`Database.statements`); run by psycopg on a connection taken from the pool
for the statement (`runtime.store.kept.pooled_connection`); run by psycopg on the
thread's kept connection (`Database.driver_connection`, what the worker does). The ways
take turns in `rounds` rounds, so that a change in the machine's speed meets all three.
Prints, per way, this process's CPU and PostgreSQL's CPU (all its server processes) per
claim, and the wall time per claim. A benchmark: it asserts nothing.
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
from runtime.logs import configure_logging
from runtime.store import statements
from runtime.store.driver import DriverStatement
from runtime.store.kept import pooled_connection


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.driver_cost", description=__doc__)
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with pg_database(DEFAULT_PG) as url, redis_namespace(DEFAULT_REDIS) as namespace:
        settings = store_settings(url, namespace)
        configure_logging(settings)
        runtime = Runtime(settings)
        try:
            runtime.store.migrate()
            runtime.store.tenants.create("t-bench")
            accept = runtime.invocations.accept
            ids = [
                accept(tenant_id="t-bench", function=FUNCTION, payload={})[0].id
                for _ in range(3 * args.count)
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

            def per_statement(invocation_id: str) -> None:
                with pooled_connection(db.engine) as connection:
                    driver.first(connection, params(invocation_id))

            def kept(invocation_id: str) -> None:
                with db.driver_connection() as connection:
                    driver.first(connection, params(invocation_id))

            ways = {
                "SQLAlchemy Core": through_sqlalchemy,
                "psycopg, pooled per claim": per_statement,
                "psycopg, kept": kept,
            }
            spent = {name: [0.0, 0.0, 0.0] for name in ways}
            todo = iter(ids)
            size = max(1, args.count // args.rounds)
            for turn in range(args.rounds):
                names = list(ways)
                names = names[turn % len(names) :] + names[: turn % len(names)]
                for name in names:
                    pg0, cpu0, wall0 = postgres_cpu_s(), time.process_time(), time.perf_counter()
                    for _ in range(size):
                        ways[name](next(todo))
                    spent[name][0] += time.process_time() - cpu0
                    spent[name][1] += postgres_cpu_s() - pg0
                    spent[name][2] += time.perf_counter() - wall0
            for name, (cpu, pg, wall) in spent.items():
                count = size * args.rounds
                print(
                    f"{name:26s} claim: this process {cpu / count * 1e6:6.0f} us CPU, "
                    f"PostgreSQL {pg / count * 1e6:6.0f} us CPU, {wall / count * 1e6:6.0f} us wall"
                )
        finally:
            runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
