"""What one claim costs the worker's CPU, by the way it is run.

    python -m bench.driver_cost [--count 1500] [--rounds 3]

Accepts `4 x count` no-ops in a new PostgreSQL database, then claims `3 x count` of them
one at a time in this process with `statements.CLAIM_WITH_ATTEMPT`, a third each way: run by
SQLAlchemy (`Database.statements`); run by psycopg on a connection taken from the pool
for the statement (`runtime.store.kept.pooled_connection`); run by psycopg on the
thread's kept connection (`Database.driver_connection`, what the worker does). The ways
take turns in `rounds` rounds, so that a change in the machine's speed meets all three.
Then releases held invocations 16 at a time (fair dispatch's release after a worker's
claims, `Fairness.release`), through SQLAlchemy and through psycopg on the kept
connection, the released rows set running between releases as the claims would.
Prints, per way, this process's CPU and PostgreSQL's CPU (all its server processes) per
claim or release, and the wall time. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from bench.__main__ import DEFAULT_PG, DEFAULT_REDIS
from bench.ferry_run import FUNCTION
from bench.group_commit import postgres_cpu_s, store_settings
from bench.infra import pg_database, redis_namespace
from runtime.app import Runtime
from runtime.logs import configure_logging
from runtime.store import fairness, statements
from runtime.store.claim_batches import ClaimRequest, claim_params
from runtime.store.claims import claim_statement
from runtime.store.kept import pooled_connection

#: Invocations a release sends: a window of 64 releases after every 16th claim.
RELEASED = 16


def take_turns(
    ways: dict[str, Callable[[Any], object]], items: Sequence[Any], rounds: int
) -> dict[str, tuple[float, float, float]]:
    """Each way runs an equal share of `items`, the ways taking turns in `rounds` rounds.

    Per item and way: this process's CPU, PostgreSQL's CPU and the wall time, in seconds.
    """
    spent = {name: [0.0, 0.0, 0.0] for name in ways}
    todo = iter(items)
    size = max(1, len(items) // len(ways) // rounds)
    for turn in range(rounds):
        names = list(ways)
        names = names[turn % len(names) :] + names[: turn % len(names)]
        for name in names:
            pg0, cpu0, wall0 = postgres_cpu_s(), time.process_time(), time.perf_counter()
            for _ in range(size):
                ways[name](next(todo))
            spent[name][0] += time.process_time() - cpu0
            spent[name][1] += postgres_cpu_s() - pg0
            spent[name][2] += time.perf_counter() - wall0
    return {
        name: (cpu / size / rounds, pg / size / rounds, wall / size / rounds)
        for name, (cpu, pg, wall) in spent.items()
    }


def report(what: str, spent: dict[str, tuple[float, float, float]]) -> None:
    for name, (cpu, pg, wall) in spent.items():
        print(
            f"{name:26s} {what}: this process {cpu * 1e6:6.0f} us CPU, "
            f"PostgreSQL {pg * 1e6:6.0f} us CPU, {wall * 1e6:6.0f} us wall"
        )


def releases(runtime: Runtime) -> dict[str, Callable[[Any], object]]:
    """The release of 16 held invocations, both ways; each leaves its rows running."""
    db = runtime.store.db
    with db.engine.begin() as connection:
        # The claims above took a third of the backlog each way; hold the rest again.
        connection.execute(
            sa.text("UPDATE invocations SET dispatched_at = NULL WHERE status = 'queued'")
        )

    def run_released(found: list[Any]) -> None:
        with db.engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE invocations SET status = 'running' WHERE id = ANY(:ids)"),
                {"ids": [dispatch.id for dispatch in found]},
            )

    def through_sqlalchemy(item: tuple[str, int]) -> None:
        params = {"_tenant": item[0], "_window": RELEASED, "_now": db.clock(), "_cap": None}
        with db.statements() as connection:
            rows = connection.execute(fairness._cached_release(db.dialect, False), params).all()
        run_released(fairness._dispatches([dict(row._mapping) for row in rows]))

    def kept(item: tuple[str, int]) -> None:
        run_released(runtime.store.fairness.release(item[0], window=RELEASED))

    return {"SQLAlchemy Core": through_sqlalchemy, "psycopg, kept": kept}


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
                for _ in range(4 * args.count)  # 3 x count claimed, the rest released
            ]
            db = runtime.store.db
            driver = claim_statement(db)

            def params(invocation_id: str) -> dict[str, Any]:
                return claim_params(ClaimRequest(invocation_id, "bench", 30), db.clock())

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
            report("claim", take_turns(ways, ids[: 3 * args.count], args.rounds))
            release_ways = releases(runtime)
            rounds = [("t-bench", n) for n in range(args.count // RELEASED)]
            report("release of 16", take_turns(release_ways, rounds, args.rounds))
        finally:
            runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
