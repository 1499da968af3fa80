"""A SQLite store Ferry creates is private to its owner (issue 12: `ferry.db` was 0644)."""

from __future__ import annotations

import os
import stat

import sqlalchemy as sa

from runtime.settings import Settings
from runtime.store import Store


def mode(path: object) -> int:
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_a_new_sqlite_database_and_its_wal_files_are_mode_0600(tmp_path):
    # Given no database file yet, and a permissive umask
    old_umask = os.umask(0o022)
    try:
        store = Store.from_settings(Settings.from_env(database_url=f"sqlite:///{tmp_path}/f.db"))
        store.migrate()
        with store.db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            # Then the database and the WAL files SQLite made beside it are 0600
            made = sorted(p.name for p in tmp_path.iterdir())
            assert made == ["f.db", "f.db-shm", "f.db-wal"]
            assert {name: mode(tmp_path / name) for name in made} == dict.fromkeys(made, 0o600)
        store.close()
    finally:
        os.umask(old_umask)


def test_an_existing_sqlite_database_keeps_its_mode(tmp_path):
    # Given an operator's database file with the mode they chose
    path = tmp_path / "f.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    store = Store.from_settings(Settings.from_env(database_url=f"sqlite:///{path}"))
    store.migrate()
    store.close()
    # Then Ferry leaves it so
    assert mode(path) == 0o640
