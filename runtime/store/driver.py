"""The hottest statements run on psycopg's own connection: SQLAlchemy builds, psycopg runs.

A worker runs a claim and a success per invocation. Through SQLAlchemy's Core execute a
claim cost 225-275 µs of the worker's CPU, run by psycopg as here 151-212 µs
(`python -m bench.driver_cost` prints both): the difference is SQLAlchemy's execution
context, parameter and result processing and the `Connection` around the pooled one. So the few statements that run once per
invocation are compiled once by SQLAlchemy into SQL text and run by psycopg directly
(`DriverStatement`), on a connection checked out of the same pool (`driver_connection`).

What SQLAlchemy's types did for these statements is done here: datetimes come back in
UTC (as `models.UTCDateTime` gives them), a JSON parameter is wrapped as JSON, and enum
constants are sent as their values. Everything else of the store stays SQLAlchemy.
PostgreSQL only: SQLite keeps SQLAlchemy, where these costs do not decide anything.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Json
from sqlalchemy.engine import Engine

from runtime.errors import StoreUnavailable
from runtime.store.db import translate_errors


class DriverStatement:
    """A SQLAlchemy statement compiled once for psycopg; run with `rows` or `first`."""

    def __init__(
        self,
        statement: Any,
        engine: Engine,
        *,
        json: tuple[str, ...] = (),
        by_index: bool = False,
    ) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        #: The statement's own literals (states, numbers), as psycopg sends them.
        self.constants = {
            name: value.value if isinstance(value, enum.Enum) else value
            for name, value in compiled.construct_params(_check=False).items()
        }
        self.json = json
        #: For a statement over a batch of keys (`= ANY(array)`, joined to its CTEs): run
        #: with sequential scans ruled out. Before a table has statistics (a new
        #: deployment, a table that grew since the last ANALYZE) PostgreSQL planned such a
        #: statement as a nested loop that read the whole attempts table once per row of
        #: the batch, and a prepared statement keeps that plan as the table grows.
        self.by_index = by_index
        #: The result's column names, read once: psycopg builds the description's column
        #: objects anew on every read (some 30 µs for an invocation's 25 columns).
        self._names: list[str] | None = None

    def rows(
        self, connection: psycopg.Connection[Any], params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Run it; every returned row as a dict of column name to value."""
        values = {**self.constants, **params}
        for name, value in params.items():
            if isinstance(value, enum.Enum):
                values[name] = value.value
        for name in self.json:
            values[name] = Json(values[name], dumps=json_text)
        if self.by_index:
            # One round trip still: the transaction, the setting and the statement are
            # sent together and the result read after the commit.
            with connection.pipeline(), connection.transaction():
                connection.execute("SET LOCAL enable_seqscan = off")
                cursor = connection.execute(self.sql, values, prepare=True)
        else:
            cursor = connection.execute(self.sql, values, prepare=True)
        if cursor.pgresult is None or not cursor.pgresult.nfields:
            return []
        names = self._names
        if names is None:
            names = self._names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, map(_utc, row), strict=True)) for row in cursor.fetchall()]

    def first(
        self, connection: psycopg.Connection[Any], params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Run it; its first row, or None."""
        rows = self.rows(connection, params)
        return rows[0] if rows else None


def json_text(value: Any) -> str:
    """`value` as JSON text, written by orjson (datetimes as RFC 3339)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # orjson refuses integers past 64 bits, which JSON (and an input) may hold.
        return json.dumps(value, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


#: The driver's errors of a lost or refused connection.
_LOST = (psycopg.OperationalError, psycopg.InterfaceError)


@contextlib.contextmanager
def driver_connection(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection of the engine's pool, in autocommit, for `DriverStatement`s.

    A lost or refused connection raises `StoreUnavailable`, as `translate_errors` does on
    SQLAlchemy's side, and is dropped from the pool rather than given to the next caller.
    """
    try:
        # The pool hands the driver's own error up when it cannot connect (unlike
        # `engine.connect()`, which wraps it); a full pool raises SQLAlchemy's timeout.
        with translate_errors():
            pooled = engine.raw_connection()
    except _LOST as ex:
        raise StoreUnavailable(f"the store is unreachable: {type(ex).__name__}") from ex
    connection: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        connection.autocommit = True
        yield connection
        connection.autocommit = False
    except _LOST as ex:
        pooled.invalidate(ex)
        raise StoreUnavailable(f"the store is unreachable: {type(ex).__name__}") from ex
    except BaseException:
        # Any other error (a constraint, a bug): the connection itself is still good.
        with contextlib.suppress(psycopg.Error):
            connection.autocommit = False
        raise
    finally:
        pooled.close()
