"""Engines, sessions and the tenant boundary of the store."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from runtime.errors import FerryError, StoreUnavailable
from runtime.settings import Settings
from runtime.store.driver import json_value
from runtime.store.kept import KeptConnections
from runtime.store.models import TenantScoped
from runtime.store.tenant_scope import (
    Gap,
    TenantScopeUnavailable,
    check_role_name,
    enter_scope,
    inspect_scope,
    leave_scope,
    reset_pooled,
)

P = ParamSpec("P")
R = TypeVar("R")
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _create_private_sqlite_file(url: str) -> None:
    """Create a new SQLite database file readable by its owner only (mode 0600).

    It holds every tenant's data and key hashes; SQLite gives its -wal and -shm files the
    database file's mode. An existing file keeps its mode.
    """
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError):  # SQLite says what is wrong
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


class TenantViolation(FerryError):
    """A tenant session tried to write a row of another tenant."""


def engine_from_settings(settings: Settings) -> Engine:
    """Build the engine: a pooled psycopg 3 engine, or SQLite in WAL mode."""
    url = settings.database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        _create_private_sqlite_file(url)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 5},
            pool_pre_ping=False,
            json_deserializer=json_value,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the gateway read while a worker writes; foreign keys are off by default.
            # A writer waits up to 5 s for the lock, then the caller gets StoreUnavailable (503).
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    options = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    return sa.create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        # No ping per checkout: it is a round trip on every unit of work. A connection
        # the server dropped fails its statement instead (StoreUnavailable, 503 + Retry-After),
        # and SQLAlchemy then discards every pooled connection opened before the failure.
        pool_pre_ping=False,
        pool_recycle=300,
        # psycopg reads JSON columns with it too, on the driver's connections as well.
        json_deserializer=json_value,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_s,
            "options": options,
            # A host that drops packets (rather than refusing) must not hang a request for
            # the kernel's TCP timeout.
            "keepalives": 1,
            "keepalives_idle": 5,
            "tcp_user_timeout": 5000,
        },
    )


def _scope_to_tenant(state: ORMExecuteState) -> None:
    tenant_id = state.session.info.get("tenant_id")
    if tenant_id is None:
        return
    if state.is_select or state.is_update or state.is_delete:
        state.statement = state.statement.options(
            with_loader_criteria(
                TenantScoped,
                lambda cls: cls.tenant_id == tenant_id,
                include_aliases=True,
                track_closure_variables=False,
            )
        )


def _check_writes(session: Session, _context: Any, _instances: Any) -> None:
    tenant_id = session.info.get("tenant_id")
    if tenant_id is None:
        return
    for obj in list(session.new):
        if isinstance(obj, TenantScoped):
            if getattr(obj, "tenant_id", None) is None:
                obj.tenant_id = tenant_id
            elif obj.tenant_id != tenant_id:
                raise TenantViolation(
                    f"a session of tenant {tenant_id!r} cannot write a row of another tenant"
                )
    for obj in list(session.dirty) + list(session.deleted):
        if not isinstance(obj, TenantScoped):
            continue
        history = sa.inspect(obj).attrs.tenant_id.history
        owners = {obj.tenant_id, *history.deleted}
        if owners != {tenant_id}:
            raise TenantViolation(
                f"a session of tenant {tenant_id!r} cannot change a row of another tenant"
            )


def _enter_function_scope(session: Session, _transaction: Any, connection: Connection) -> None:
    scope = session.info.get("function_scope")
    if scope is not None and not session.info.get("scope_left"):
        enter_scope(connection, scope, session.info["tenant_id"])


def _reset_pooled(dbapi_connection: Any, record: Any) -> None:
    if dbapi_connection is not None:
        try:
            reset_pooled(dbapi_connection, record.info)
        except Exception as ex:  # a connection that cannot reset is not reused
            record.invalidate(ex)


class Database:
    """The engine and its session factory; every store module works through one of these.

    `function_role` is the PostgreSQL role functions' sessions run as
    (`runtime.store.tenant_scope`); SQLite has none.
    """

    def __init__(
        self, engine: Engine, clock: Clock = utcnow, *, function_role: str = "ferry_function"
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.function_role = check_role_name(function_role)
        self._function_scope_ready = False
        #: The hot path's connections, one kept per thread (PostgreSQL only).
        self._kept = KeptConnections(engine) if engine.dialect.name == "postgresql" else None
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Reads and single-statement writes need no transaction: on an autocommit
        # connection they cost one round trip, not BEGIN + statement + COMMIT.
        self._autocommit = sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )
        # Functions' sessions: the ORM guard as every tenant session, and on PostgreSQL
        # the database's own scope at the start of each transaction.
        self._function_sessions = sessionmaker(engine, expire_on_commit=False)
        for factory in (self._sessions, self._autocommit, self._function_sessions):
            event.listen(factory, "do_orm_execute", _scope_to_tenant)
            event.listen(factory, "before_flush", _check_writes)
        if self.dialect == "postgresql":
            event.listen(self._function_sessions, "after_begin", _enter_function_scope)
            if not event.contains(engine, "checkin", _reset_pooled):
                event.listen(engine, "checkin", _reset_pooled)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self, tenant_id: str | None = None) -> Iterator[Session]:
        """Open a unit of work; commit on success, roll back on error.

        With `tenant_id`, ORM reads of tenant-scoped models see only that tenant's rows
        and writes of another tenant's rows fail.
        """
        with translate_errors(), self._sessions(info={"tenant_id": tenant_id}) as session:
            with session.begin():
                yield session

    @contextlib.contextmanager
    def autocommit(self, tenant_id: str | None = None) -> Iterator[Session]:
        """A session whose every statement commits by itself: for reads, and for writes
        that are one statement (atomic on their own). Tenant scoping as in `session`.
        """
        with translate_errors(), self._autocommit(info={"tenant_id": tenant_id}) as session:
            yield session

    @contextlib.contextmanager
    def statements(self) -> Iterator[Connection]:
        """A Core connection in autocommit mode, for the hot path's prepared statements.

        No ORM and no tenant scoping: the statements run here name their tenant themselves.
        """
        with translate_errors(), self.engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    def open_session(self, tenant_id: str) -> Session:
        """A function's `ctx.session`, scoped to `tenant_id`; the caller manages it.

        On PostgreSQL the database enforces the scope (`runtime.store.tenant_scope`): every
        query sees only the tenant's rows, whatever its form. It refuses with
        `TenantScopeUnavailable` while the set-up is incomplete, rather than fall back to
        a scope that raw SQL passes by. On SQLite only ORM queries are scoped.
        """
        if self.dialect != "postgresql":
            return self._function_sessions(info={"tenant_id": tenant_id})
        self._require_function_scope()
        return self._function_sessions(
            info={"tenant_id": tenant_id, "function_scope": self.function_role}
        )

    def leave_function_scope(self, session: Session) -> None:
        """Take a function's session back for the runtime's own writes (the outcome).

        Raises `TenantScopeEscaped` if the function changed its session's role or tenant.
        """
        role = session.info.get("function_scope")
        if role is None or session.info.get("scope_left"):
            return
        session.info["scope_left"] = True
        if session.in_transaction():
            leave_scope(session, role, session.info["tenant_id"])

    def tenant_scope_gaps(self) -> list[Gap]:
        """What the database lacks to scope functions' sessions (PostgreSQL; else empty)."""
        if self.dialect != "postgresql":
            return []
        with translate_errors(), self.engine.connect() as connection:
            return inspect_scope(connection, self.function_role)

    def _require_function_scope(self) -> None:
        # Checked until it first holds, then trusted: the set-up is not undone in operation.
        if self._function_scope_ready:
            return
        gaps = self.tenant_scope_gaps()
        if gaps:
            raise TenantScopeUnavailable(
                "functions' sessions cannot be scoped to their tenant: "
                + "; ".join(gap.problem for gap in gaps)
                + " (`ferry migrate` prints the SQL that sets it up; docs/tenancy.md)"
            )
        self._function_scope_ready = True

    def ping(self) -> None:
        with translate_errors(), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def driver_connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """This thread's psycopg connection in autocommit, for `DriverStatement`s.

        PostgreSQL only. A lost or refused connection raises `StoreUnavailable`
        (`runtime.store.kept`).
        """
        if self._kept is None:
            raise RuntimeError("driver statements run on PostgreSQL only")
        return self._kept.connection()

    def dispose(self) -> None:
        if self._kept is not None:
            self._kept.close()
        self.engine.dispose()


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn a lost or refused database connection into `StoreUnavailable`."""
    try:
        yield
    except (OperationalError, PoolTimeout) as ex:
        raise StoreUnavailable(
            f"the store is unreachable: {type(ex.__cause__ or ex).__name__}"
        ) from ex
    except DBAPIError as ex:
        if ex.connection_invalidated:
            raise StoreUnavailable("the store connection was lost") from ex
        raise
