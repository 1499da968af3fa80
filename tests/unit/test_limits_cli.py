"""`ferry tenants set-limits` and `ferry tenants show`, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pytest

from runtime.cli import main
from runtime.settings import Settings
from runtime.store import Store

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def store(backend, request, sqlite_env, monkeypatch):
    """A migrated store the CLI's FERRY_* settings point at, with tenant `acme`."""
    if backend == "production":
        monkeypatch.setenv("FERRY_DATABASE_URL", request.getfixturevalue("pg_database"))
    monkeypatch.setenv("FERRY_DEFAULT_MAX_WAITING", "500")
    assert main(["migrate"]) == 0
    assert main(["tenants", "create", "acme"]) == 0
    store = Store.from_settings(Settings.from_env())
    yield store
    store.close()


def ferry(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_set_limits_stores_them_and_show_prints_them_with_counts(store, capsys):
    code, out, err = ferry(
        capsys, "tenants", "set-limits", "acme", "--rate", "600/min", "--burst", "20",
        "--concurrency", "4", "--weight", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "rate_per_s: 10/s (tenant)" in out and "max_waiting: 500 (default)" in out
    own = store.limits.get("acme")
    assert (own.rate_per_s, own.burst, own.concurrency, own.max_waiting, own.weight) == (
        10.0, 20, 4, None, 2,
    )  # fmt: skip
    # One limit back to its default; the others stay
    assert ferry(capsys, "tenants", "set-limits", "acme", "--burst", "default")[0] == 0
    code, out, _ = ferry(capsys, "tenants", "show", "acme", "--json")
    shown = json.loads(out)
    assert shown["id"] == "acme" and shown["status"] == "active"
    assert shown["own"]["burst"] is None and shown["effective"]["burst"] == 10
    assert (shown["waiting"], shown["running"]) == (0, 0)
    code, out, _ = ferry(capsys, "tenants", "show", "acme")
    assert "waiting: 0  running: 0" in out and "concurrency: 4 (tenant)" in out
    # --reset returns every limit to its default
    assert ferry(capsys, "tenants", "set-limits", "acme", "--reset")[0] == 0
    assert store.limits.customised() == {}


def test_set_limits_refuses_bad_values_and_unknown_tenants(store, capsys):
    for option, value in (("--rate", "fast"), ("--rate", "5/day"), ("--burst", "-1")):
        with pytest.raises(SystemExit) as exited:
            main(["tenants", "set-limits", "acme", option, value])
        assert exited.value.code == 2
    code, _, err = ferry(capsys, "tenants", "set-limits", "acme", "--weight", "0")
    assert code == 1 and "weight" in err
    code, _, err = ferry(capsys, "tenants", "show", "nobody")
    assert code == 1 and "no tenant" in err
    assert store.limits.customised() == {}
