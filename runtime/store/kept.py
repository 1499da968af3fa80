"""A psycopg connection kept per thread for the hot path's statements (`runtime.store.driver`).

A worker thread claims an invocation per message and a gateway thread inserts one per
request, each one statement on psycopg's own connection. Taking that connection from
SQLAlchemy's pool for the statement and giving it back (with autocommit switched on and
off) cost about 100 µs of the process's CPU per statement, a third of the claim's own
(`python -m bench.driver_cost`). So a thread that runs these statements keeps one
connection, in autocommit, taken from a pool of its own (`Pool.recreate`: the engine's
connect arguments, events and recycling):

- at most `limit` threads keep one (the engine's pool size); a thread past it takes one
  from the engine's pool per statement, as before, so that no thread waits for a kept one;
- a connection lost (server restarted, network cut) fails its statement with
  `StoreUnavailable` and is dropped, and every kept connection taken before the failure is
  replaced at its next use, as SQLAlchemy's pool replaces its own: an outage costs one
  failed statement, not one per thread;
- a connection an error left in a transaction (or broken) is dropped, not reused;
- each goes back to its pool and is taken out again every `REFRESH_S`, so the pool's
  recycling applies to it as to any other;
- `close` gives them all back (`Database.dispose`); a forked child starts with none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import Pool, PoolProxiedConnection

from runtime.errors import StoreUnavailable

#: Seconds a thread keeps a connection before it is handed back and taken out again.
REFRESH_S = 60.0

#: The driver's errors of a lost or refused connection.
LOST = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclasses.dataclass
class _Kept:
    pooled: PoolProxiedConnection
    connection: psycopg.Connection[Any]
    taken_at: float


class KeptConnections:
    """Per thread, one connection in autocommit for `DriverStatement`s (module docstring)."""

    def __init__(self, engine: Engine, *, limit: int | None = None) -> None:
        self._engine = engine
        size = getattr(engine.pool, "size", None)
        self.limit = limit if limit is not None else (size() if callable(size) else 1)
        self._lock = threading.Lock()
        self._pool: Pool | None = None
        self._kept: dict[int, _Kept] = {}
        #: Threads taking a connection for themselves right now.
        self._taking = 0
        self._local = threading.local()
        self._lost_at = 0.0
        self._pid = os.getpid()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """This thread's connection, in autocommit; `StoreUnavailable` if it is lost."""
        kept = self._take()
        if kept is None:
            with pooled_connection(self._engine) as connection:
                yield connection
            return
        connection = kept.connection
        try:
            yield connection
        except LOST as ex:
            self._lost_at = time.monotonic()
            self._drop(kept, ex)
            raise _unreachable(ex) from ex
        except BaseException:
            # A constraint or a bug leaves an autocommit connection idle and good; anything
            # that left it inside a transaction, or broken, must not run the next statement.
            if connection.info.transaction_status != TransactionStatus.IDLE:
                self._drop(kept, None)
            raise

    def kept(self) -> int:
        """How many threads keep a connection now."""
        with self._lock:
            return len(self._kept)

    def close(self) -> None:
        """Give every kept connection back and close their pool."""
        with self._lock:
            kept, self._kept = list(self._kept.values()), {}
            pool, self._pool = self._pool, None
        self._local = threading.local()
        for each in kept:
            _give_back(each.pooled)
        if pool is not None:
            pool.dispose()

    def _take(self) -> _Kept | None:
        if self._pid != os.getpid():
            self._forget_parents()
        kept: _Kept | None = getattr(self._local, "kept", None)
        now = time.monotonic()
        if kept is not None:
            if kept.taken_at > self._lost_at and now - kept.taken_at < REFRESH_S:
                return kept
            if kept.taken_at > self._lost_at:
                self._release(kept)
            else:
                self._drop(kept, None)
        with self._lock:
            # A place is taken before the connection is: threads arriving together must
            # not take more than the pool holds, or the last of them would wait for one.
            if len(self._kept) + self._taking >= self.limit:
                self._release_dead_threads()
                if len(self._kept) + self._taking >= self.limit:
                    return None
            if self._pool is None:
                self._pool = self._engine.pool.recreate()
            pool = self._pool
            self._taking += 1
        kept = None
        try:
            kept = self._connect(pool, now)
        finally:
            with self._lock:
                self._taking -= 1
                if kept is not None:
                    # A new thread may have the ident of one that ended keeping a connection.
                    ended = self._kept.pop(threading.get_ident(), None)
                    if ended is not None:
                        _give_back(ended.pooled)
                    self._kept[threading.get_ident()] = kept
        self._local.kept = kept
        return kept

    @staticmethod
    def _connect(pool: Pool, now: float) -> _Kept | None:
        try:
            pooled = pool.connect()
        except PoolTimeout:
            return None  # not expected within the limit; the engine's pool serves it then
        except (*LOST, OperationalError) as ex:
            raise _unreachable(ex) from ex
        connection: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        try:
            connection.autocommit = True
        except LOST as ex:
            pooled.invalidate(ex)
            raise _unreachable(ex) from ex
        return _Kept(pooled, connection, now)

    def _release(self, kept: _Kept) -> None:
        self._forget(kept)
        _give_back(kept.pooled)

    def _drop(self, kept: _Kept, error: BaseException | None) -> None:
        self._forget(kept)
        with contextlib.suppress(Exception):
            kept.pooled.invalidate(error)

    def _forget(self, kept: _Kept) -> None:
        self._local.kept = None
        with self._lock:
            if self._kept.get(threading.get_ident()) is kept:
                del self._kept[threading.get_ident()]

    def _release_dead_threads(self) -> None:
        """Give back the connections of threads that ended (caller holds the lock)."""
        alive = {thread.ident for thread in threading.enumerate()}
        for ident in [ident for ident in self._kept if ident not in alive]:
            _give_back(self._kept.pop(ident).pooled)

    def _forget_parents(self) -> None:
        # The parent's connections are its own: the child neither uses nor closes them.
        self._pid = os.getpid()
        self._kept, self._pool, self._local = {}, None, threading.local()


def _unreachable(ex: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"the store is unreachable: {type(ex).__name__}")


def _give_back(pooled: PoolProxiedConnection) -> None:
    with contextlib.suppress(Exception):
        pooled.driver_connection.autocommit = False  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        pooled.close()


@contextlib.contextmanager
def pooled_connection(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the engine's pool for one use, in autocommit meanwhile.

    A lost or refused connection raises `StoreUnavailable` and is dropped from the pool
    rather than given to the next caller.
    """
    try:
        # The pool hands the driver's own error up when it cannot connect (unlike
        # `engine.connect()`, which wraps it); a full pool raises SQLAlchemy's timeout.
        pooled = engine.raw_connection()
    except (*LOST, OperationalError, PoolTimeout) as ex:
        raise _unreachable(ex) from ex
    connection: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        connection.autocommit = True
        yield connection
        connection.autocommit = False
    except LOST as ex:
        pooled.invalidate(ex)
        raise _unreachable(ex) from ex
    except BaseException:
        # Any other error (a constraint, a bug): the connection itself is still good.
        with contextlib.suppress(psycopg.Error):
            connection.autocommit = False
        raise
    finally:
        pooled.close()
