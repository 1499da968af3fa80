"""Opening the store, or the whole runtime, for one command once its schema is current."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from runtime.errors import ConfigurationError
from runtime.services.tenants import TenantService
from runtime.settings import Settings
from runtime.store import Store

if TYPE_CHECKING:
    from runtime.app import Runtime


class StoreNotMigrated(ConfigurationError):
    """The store's schema is not the newest; run `ferry migrate`."""


def check_schema(store: Store) -> None:
    """Raise `StoreNotMigrated` unless the store is at the newest schema."""
    if not store.is_current():
        raise StoreNotMigrated(
            "the store has not been migrated to the newest schema; run `ferry migrate`"
        )


@contextlib.contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    """The store, after checking its schema is current (so no command meets missing tables)."""
    store = Store.from_settings(settings)
    try:
        check_schema(store)
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def open_runtime(settings: Settings) -> Iterator[Runtime]:
    """The whole runtime (store, broker, dispatcher), for commands that send work."""
    # Imported here: building a runtime loads the functions, which only some commands need.
    from runtime.app import Runtime

    runtime = Runtime(settings)
    try:
        check_schema(runtime.store)
        yield runtime
    finally:
        runtime.close()


@contextlib.contextmanager
def open_tenants(settings: Settings) -> Iterator[TenantService]:
    """The tenants-and-keys service over the store, for one command."""
    with open_store(settings) as store:
        yield TenantService(store)
