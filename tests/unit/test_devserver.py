"""`ferry dev`'s parts: its settings, its key, what it prints, where it listens."""

from __future__ import annotations

import shlex
import socket
from collections.abc import Iterator

import pytest

from runtime import devserver
from runtime.cli import main
from runtime.cli.processes import dev_settings
from runtime.settings import Settings
from runtime.store import Store

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def db_url(sqlite_env: str) -> str:
    return sqlite_env


@pytest.fixture
def migrated(db_url: str) -> Iterator[Store]:
    store = Store.from_settings(Settings.from_env())
    store.migrate()
    yield store
    store.close()


def test_dev_uses_short_recovery_timings_unless_they_are_set(db_url, monkeypatch):
    # Given nothing set, the dev defaults apply
    defaults = dev_settings(Settings.from_env())
    assert (defaults.redispatch_after_s, defaults.lease_grace_s) == (2.0, 5.0)
    assert defaults.lease_s == 5.0
    assert defaults.log_format == "console"
    # Given a value the user set, it is kept
    monkeypatch.setenv("FERRY_REDISPATCH_AFTER_S", "30")
    monkeypatch.setenv("FERRY_LOG_FORMAT", "json")
    chosen = dev_settings(Settings.from_env())
    assert (chosen.redispatch_after_s, chosen.lease_grace_s, chosen.log_format) == (
        30.0,
        5.0,
        "json",
    )
    assert chosen.database_url == db_url


def test_dev_credentials_are_made_once_and_replaced_when_they_stop_working(migrated, tmp_path):
    state = tmp_path / "state"
    # When dev starts the first time, it makes the demo tenant and its key, saved 0600,
    # and an operator key (admin belongs to operator keys alone), saved 0600 too
    first = devserver.ensure_credentials(migrated, state)
    assert first.created and first.tenant_id == "demo"
    assert first.key_file.read_text().strip() == first.key
    assert first.key_file.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    tenant_key = migrated.tenants.authenticate(first.key)
    assert tenant_key.tenant_id == "demo" and tenant_key.scopes == {"invoke", "read", "manage"}
    assert first.operator_key_file.read_text().strip() == first.operator_key
    assert first.operator_key_file.stat().st_mode & 0o777 == 0o600
    operator = migrated.tenants.authenticate(first.operator_key)
    assert operator.is_admin and operator.tenant_id is None
    # When it starts again, it reuses the saved key
    again = devserver.ensure_credentials(migrated, state)
    assert (again.key, again.created) == (first.key, False)
    assert again.operator_key == first.operator_key
    # When the saved key was revoked, it makes a new one for the same tenant
    migrated.tenants.revoke_key(migrated.tenants.authenticate(first.key).key_id)
    replaced = devserver.ensure_credentials(migrated, state)
    assert replaced.created and replaced.key != first.key
    assert replaced.key_file.read_text().strip() == replaced.key
    assert migrated.tenants.authenticate(replaced.key).tenant_id == "demo"


def test_the_curl_line_survives_a_shell(db_url):
    line = devserver.curl_invoke("http://127.0.0.1:8000", "fy_k_s", "echo_time", {"a": "it's"}, 5)
    argv = shlex.split(line)
    assert argv[argv.index("-d") + 1] == '{"a": "it\'s"}'
    assert "http://127.0.0.1:8000/v1/functions/echo_time/invocations?wait=5" in argv
    assert "Authorization: Bearer fy_k_s" in argv


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:80"),
        ("0.0.0.0", "http://127.0.0.1:80"),
        ("::", "http://[::1]:80"),
        ("localhost", "http://localhost:80"),
    ],
)
def test_the_printed_url_reaches_a_wildcard_address_on_loopback(host, url):
    assert devserver.base_url(host, 80) == url


def test_dev_on_a_port_in_use_says_so_in_one_line(db_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dev", "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"ferry: cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
    assert out == ""
