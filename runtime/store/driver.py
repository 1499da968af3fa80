"""The hottest statements run on psycopg's own connection: SQLAlchemy builds, psycopg runs.

A worker runs a claim and a success per invocation. Through SQLAlchemy's Core execute a
claim cost 225-275 µs of the worker's CPU, run by psycopg as here 151-212 µs
(`python -m bench.driver_cost` prints both): the difference is SQLAlchemy's execution
context, parameter and result processing and the `Connection` around the pooled one. So the few statements that run once per
invocation are compiled once by SQLAlchemy into SQL text and run by psycopg directly
(`DriverStatement`), on a connection the thread keeps (`Database.driver_connection`,
`runtime.store.kept`).

What SQLAlchemy's types did for these statements is done here: datetimes come back in
UTC (as `models.UTCDateTime` gives them), a JSON parameter is wrapped as JSON, and enum
constants are sent as their values. Everything else of the store stays SQLAlchemy.
PostgreSQL only: SQLite keeps SQLAlchemy, where these costs do not decide anything.
"""

from __future__ import annotations

import enum
import json
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Json
from sqlalchemy.engine import Engine


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
        #: The SQL text, with the statement's own constants written into it (`_inline`).
        self.sql, self.constants = _inline(compiled)
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


#: Driver statements by what they are built from (a statement built once, by a module
#: constant or a cached builder), so that each is compiled once per process.
_PREPARED: dict[tuple[Any, str, tuple[str, ...], bool], DriverStatement] = {}


def prepared(
    statement: Any, engine: Engine, *, json: tuple[str, ...] = (), by_index: bool = False
) -> DriverStatement:
    """`statement` compiled for psycopg, once per process (a race compiles it twice)."""
    key = (statement, engine.dialect.name, json, by_index)
    compiled = _PREPARED.get(key)
    if compiled is None:
        compiled = _PREPARED[key] = DriverStatement(statement, engine, json=json, by_index=by_index)
    return compiled


#: A constant string written into the SQL text as it is: a state, an outcome, a name.
_WORD = re.compile(r"[A-Za-z0-9_.:-]*")


def _inline(compiled: Any) -> tuple[str, dict[str, Any]]:
    """The SQL text with the statement's own constants as literals; those left as parameters.

    A constant (a state, `attempts + 1`, a NULL) is a bound parameter to SQLAlchemy, so
    psycopg would dump it on every run: half of a claim's parameters and most of a
    success's. Written into the text, only the caller's parameters (bind parameters
    without a value, `required`) are sent. A constant that is not a number, a NULL or a
    plain word stays a parameter: nothing here quotes text.
    """
    sql = str(compiled)
    rest: dict[str, Any] = {}
    for name, value in compiled.construct_params(_check=False).items():
        bind = compiled.binds.get(name)
        if bind is not None and bind.required:
            continue  # the caller's
        constant = value.value if isinstance(value, enum.Enum) else value
        literal = _literal(constant)
        if literal is None:
            rest[name] = constant
        else:
            sql = sql.replace(f"%({name})s", literal)
    return sql, rest


def _literal(value: Any) -> str | None:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and _WORD.fullmatch(value):
        return f"'{value}'"
    return None


def json_text(value: Any) -> str:
    """`value` as JSON text, written by orjson (datetimes as RFC 3339)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # orjson refuses integers past 64 bits, which JSON (and an input) may hold.
        return json.dumps(value, default=_iso)


#: A run of 19 digits: an integer there may be past 64 bits, which orjson would read as a
#: float (losing digits) rather than refuse.
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{19}")


def json_value(text: str | bytes | bytearray | memoryview) -> Any:
    """The value of a JSON document, read by orjson, or by `json` where they differ.

    Every JSON column read from the store comes through here (the engine's
    `json_deserializer`, which psycopg also uses on the driver's connections): the claim
    reads an invocation's payload once per attempt. orjson reads an integer past 64 bits
    as a float, and refuses NaN and lone surrogates; `json` reads all of them as they
    were stored, so a document that may hold one goes to `json`.
    """
    if isinstance(text, str):
        may_be_long = _LONG_DIGITS.search(text) is not None
    else:
        may_be_long = _LONG_DIGITS_BYTES.search(text) is not None
    if not may_be_long:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(bytes(text) if isinstance(text, memoryview) else text)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value
