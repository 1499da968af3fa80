"""Write a batch of claims and successes together (group commit's SQL side).

`write_batch` takes the requests of several worker threads and answers each: a claim
with the invocation's row if it was won (None if not), a success with True if it was
recorded (False if the lease was no longer the claimer's). Rows are checked one by one
exactly as the single statements check them, so a request that loses is refused on its
own and the rest of the batch is written.

On PostgreSQL the claims of one worker are one statement and the successes another
(`runtime.store.batch_statements`), each committed on its own (autocommit): one round
trip each, where one transaction around both cost four (BEGIN, the two, COMMIT). The
rows of a statement stand alone, so nothing needs the two in one transaction; if one of
them fails, its requests get the error (`Failed`) and the other's keep their outcomes.
SQLite has no data-modifying CTEs: there each request is its own statements
(`claim_one`, `succeed_one`, which `Claims` uses for a single request too), all in one
transaction, which fails as a whole.
"""

from __future__ import annotations

import dataclasses
import time
import types
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from runtime.errors import StoreUnavailable
from runtime.store import batch_statements, statements
from runtime.store.db import Database, translate_errors
from runtime.store.driver import json_text, prepared
from runtime.store.group_commit import Failed


@dataclasses.dataclass(frozen=True)
class ClaimRequest:
    """Claim `invocation_id` for `worker_id` with a lease of `lease_s` seconds."""

    invocation_id: str
    worker_id: str
    lease_s: float


@dataclasses.dataclass(frozen=True)
class SuccessRequest:
    """Record the success of attempt `attempt` of `invocation_id`, if still `worker_id`'s."""

    invocation_id: str
    attempt: int
    worker_id: str
    result: dict[str, Any] | None


Request = ClaimRequest | SuccessRequest


def write_batch(db: Database, requests: Sequence[Request]) -> list[Any]:
    """Write the batch; the outcome of each request, in order (see the module docstring)."""
    now = db.clock()
    if db.dialect == "postgresql":
        return _write_postgresql(db, requests, now)
    outcomes: list[Any] = []
    with translate_errors(), db.engine.begin() as connection:
        for request in requests:
            if isinstance(request, ClaimRequest):
                outcomes.append(claim_one(connection, request, now))
            else:
                outcomes.append(succeed_one(connection, request, now))
    return outcomes


#: Pauses between tries to write an outcome while the store is unavailable (about 15 s
#: in all, to ride out a database restart or failover).
OUTAGE_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def write_riding_outages(
    db: Database,
    requests: Sequence[Request],
    *,
    backoff_s: Sequence[float] = OUTAGE_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
    write: Callable[[Database, Sequence[Request]], list[Any]] | None = None,
) -> list[Any]:
    """`write_batch`, with the requests an outage failed written again after each pause.

    For outcomes nobody waits for (`Claims.succeed_later`): what is still unwritten after
    the last pause gets its `Failed` error, which its future raises.
    """
    write = write or write_batch
    outcomes: list[Any] = [None] * len(requests)
    todo = list(range(len(requests)))
    for delay in (*backoff_s, None):
        try:
            written = write(db, [requests[i] for i in todo])
        except StoreUnavailable as ex:
            written = [Failed(ex)] * len(todo)
        retry = []
        for index, outcome in zip(todo, written, strict=True):
            outcomes[index] = outcome
            if isinstance(outcome, Failed) and isinstance(outcome.error, StoreUnavailable):
                retry.append(index)
        if not retry or delay is None:
            break
        todo = retry
        sleep(delay)
    return outcomes


def claim_params(request: ClaimRequest, now: datetime) -> dict[str, Any]:
    """The parameters of `statements.CLAIM` (and `CLAIM_WITH_ATTEMPT`) for the request."""
    return {
        "_id": request.invocation_id,
        "_now": now,
        "_lease": now + timedelta(seconds=request.lease_s),
        "_worker": request.worker_id,
    }


def claim_one(connection: Connection | Session, request: ClaimRequest, now: datetime) -> Any:
    """The claim and its attempt row as two statements in the caller's transaction (SQLite);
    the claimed row, or None."""
    row = connection.execute(statements.CLAIM, claim_params(request, now)).first()
    if row is not None:
        add_attempt(connection, row, request.worker_id, now)
    return row


def succeed_one(connection: Connection | Session, request: SuccessRequest, now: datetime) -> bool:
    """The success and its attempt's close as two statements in the caller's transaction;
    False, with nothing written, if the lease is no longer the claimer's."""
    lease = {"_id": request.invocation_id, "_attempt": request.attempt}
    done: Any = connection.execute(
        statements.SUCCEED,
        {**lease, "_worker": request.worker_id, "_now": now, "_result": request.result},
    )
    if done.rowcount != 1:
        return False
    close_attempt(connection, request.invocation_id, request.attempt, now, "succeeded")
    return True


def close_attempt(
    connection: Connection | Session,
    invocation_id: str,
    number: int,
    now: datetime,
    outcome: str,
    error: dict[str, Any] | None = None,
    traceback: str | None = None,
) -> None:
    """End attempt `number` of the invocation with `outcome`, in the caller's transaction."""
    connection.execute(
        statements.CLOSE_ATTEMPT,
        {
            "_invocation_id": invocation_id,
            "_number": number,
            "_now": now,
            "_outcome": outcome,
            "_error": error,
            "_traceback": traceback,
        },
    )


def _write_postgresql(db: Database, requests: Sequence[Request], now: datetime) -> list[Any]:
    outcomes: list[Any] = [None] * len(requests)
    # Claims by (worker, lease): one statement each, normally one in all. An invocation asked
    # for twice in one batch is won by its first request at most.
    claims: dict[tuple[str, float], dict[str, int]] = {}
    successes: dict[str, int] = {}
    for index, request in enumerate(requests):
        if isinstance(request, ClaimRequest):
            group = claims.setdefault((request.worker_id, request.lease_s), {})
            group.setdefault(request.invocation_id, index)
        else:
            outcomes[index] = False
            successes.setdefault(request.invocation_id, index)
    for (worker_id, lease_s), ids in claims.items():
        params = {
            "_ids": sorted(ids),
            "_now": now,
            "_lease": now + timedelta(seconds=lease_s),
            "_worker": worker_id,
        }
        rows = _rows(db, batch_statements.CLAIM_BATCH, params)
        if isinstance(rows, Exception):
            _fail(outcomes, requests, rows, (worker_id, lease_s))
            continue
        for row in rows:
            outcomes[ids[row.id]] = row
    if successes:
        batch = [requests[successes[i]] for i in sorted(successes)]
        params = {
            "_ids": [r.invocation_id for r in batch],
            "_attempts": [r.attempt for r in batch],  # type: ignore[union-attr]
            "_workers": [r.worker_id for r in batch],
            # As the JSON column stores None in the single statement: JSON `null`, not NULL.
            "_results": [json_text(r.result) for r in batch],  # type: ignore[union-attr]
            "_now": now,
        }
        rows = _rows(db, batch_statements.SUCCEED_BATCH, params)
        if isinstance(rows, Exception):
            _fail(outcomes, requests, rows, _SUCCESSES)
            return outcomes
        for row in rows:
            outcomes[successes[row.invocation_id]] = True
    return outcomes


def _rows(db: Database, statement: Any, params: dict[str, Any]) -> list[Any] | Exception:
    """Run one statement of the batch, committed by itself: its rows, or its error.

    On psycopg directly, planned by index whatever the table's statistics
    (`DriverStatement.by_index`); each row with its columns as attributes, as SQLAlchemy's
    rows have them.
    """
    try:
        with db.driver_connection() as connection:
            rows = prepared(statement, db.engine, by_index=True).rows(connection, params)
    except Exception as ex:
        return ex
    return [types.SimpleNamespace(**row) for row in rows]


#: The statement a request is written by: its claim group (worker, lease), or this.
_SUCCESSES = ("", -1.0)


def _statement_of(request: Request) -> tuple[str, float]:
    if isinstance(request, ClaimRequest):
        return request.worker_id, request.lease_s
    return _SUCCESSES


def _fail(
    outcomes: list[Any], requests: Sequence[Request], error: Exception, statement: tuple[str, float]
) -> None:
    """Every request of the failed statement (duplicates too) gets its error, as `Failed`."""
    failed = Failed(error)
    for index, request in enumerate(requests):
        if _statement_of(request) == statement:
            outcomes[index] = failed


def add_attempt(
    connection: Connection | Session, claimed: Any, worker_id: str, now: datetime
) -> None:
    """The attempt row of a claim just won, in the claim's transaction."""
    connection.execute(
        statements.ADD_ATTEMPT,
        {
            "invocation_id": claimed.id,
            "tenant_id": claimed.tenant_id,
            "number": claimed.attempts,
            "worker_id": worker_id,
            "started_at": now,
        },
    )
