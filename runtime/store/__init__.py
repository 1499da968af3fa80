"""The invocation store: SQL is the source of truth for everything Ferry accepted."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from runtime.settings import Settings
from runtime.store.audit import AuditLog
from runtime.store.batches import Batches
from runtime.store.callbacks import Callbacks
from runtime.store.claims import Claims
from runtime.store.db import Clock, Database, engine_from_settings, translate_errors, utcnow
from runtime.store.fairness import Fairness
from runtime.store.invocations import Invocations
from runtime.store.leases import Leases
from runtime.store.limits import Limits
from runtime.store.retention import Retention
from runtime.store.schedules import Schedules
from runtime.store.search import InvocationSearch
from runtime.store.secrets import Secrets
from runtime.store.stats import Stats
from runtime.store.sweep import Sweep
from runtime.store.tenant_scope import apply_scope
from runtime.store.tenants import Tenants
from runtime.store.timeseries import TimeSeries
from runtime.store.workers import Workers

MIGRATIONS = Path(__file__).parent / "migrations"


class Store:
    """One database, with one repository per role (each a module of this package)."""

    def __init__(
        self,
        db: Database,
        *,
        group_commit_ms: float = 0.0,
        success_batch_ms: float = 0.0,
        accept_group_commit: bool = False,
        claim_synchronous_commit: bool = False,
    ) -> None:
        self.db = db
        self.tenants = Tenants(db)
        self.invocations = Invocations(db, accept_group_commit=accept_group_commit)
        self.claims = Claims(
            db,
            group_commit_ms=group_commit_ms,
            success_batch_ms=success_batch_ms,
            claim_synchronous_commit=claim_synchronous_commit,
        )
        self.leases = Leases(db)
        self.sweep = Sweep(db)
        self.fairness = Fairness(db)
        self.workers = Workers(db)
        self.schedules = Schedules(db)
        self.stats = Stats(db)
        self.timeseries = TimeSeries(db)
        self.search = InvocationSearch(db)
        self.retention = Retention(db)
        self.audit = AuditLog(db)
        self.secrets = Secrets(db)
        self.limits = Limits(db)
        self.callbacks = Callbacks(db)
        self.batches = Batches(db)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = utcnow) -> Store:
        return cls(
            Database(
                engine_from_settings(settings), clock, function_role=settings.function_db_role
            ),
            group_commit_ms=settings.group_commit_ms,
            success_batch_ms=settings.success_batch_ms,
            accept_group_commit=settings.accept_group_commit,
            claim_synchronous_commit=settings.claim_synchronous_commit,
        )

    def _alembic(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return config

    def migrate(self) -> None:
        """Bring the schema to the newest migration; safe to run again."""
        config = self._alembic()
        with translate_errors(), self.db.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Two processes migrating at once must not both create the tables.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4711)")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            if connection.dialect.name == "postgresql":
                # The owner's part of functions' tenant scope: grants (docs/tenancy.md).
                apply_scope(connection, self.db.function_role)

    def is_current(self) -> bool:
        head = ScriptDirectory.from_config(self._alembic()).get_current_head()
        with translate_errors(), self.db.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision() == head

    def close(self) -> None:
        self.invocations.close()
        self.claims.close()
        self.db.dispose()


__all__ = ["Clock", "Database", "Store", "utcnow"]
