"""`ferry secrets ...` through `main([...])` on a temporary SQLite store."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator

import pytest

from runtime.cli import build_parser, main
from runtime.secrets import SecretBox
from runtime.services.secrets import SecretService
from runtime.settings import Settings
from runtime.store import Store
from tests.unit.test_cli import Ran

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def ferry(sqlite_env: str, capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """Run `ferry ...` in this process on a private SQLite store; what it printed."""

    def run(*argv: str) -> Ran:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Ran(code, captured.out, captured.err)

    return run


@pytest.fixture
def migrated(ferry: Callable[..., Ran], sqlite_env: str) -> Iterator[Store]:
    assert ferry("migrate").code == 0
    store = Store.from_settings(Settings.from_env())
    yield store
    store.close()


@pytest.fixture
def tenant(ferry: Callable[..., Ran], migrated: Store) -> str:
    assert ferry("tenants", "create", "acme").code == 0
    return "acme"


def service(store: Store) -> SecretService:
    return SecretService(store, SecretBox.from_settings(Settings.from_env()))


def test_set_reads_the_value_from_stdin_or_a_file_and_never_prints_it(
    ferry, migrated, tenant, monkeypatch, tmp_path
):
    value = "tok-" + secrets.token_hex(12)
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    ran = ferry("secrets", "set", "--tenant", tenant, "crm_token")
    assert ran.code == 0 and value not in ran.out + ran.err
    assert service(migrated).load(tenant, ["crm_token"]) == {"crm_token": value}
    other = "erp-" + secrets.token_hex(12)
    path = tmp_path / "erp.txt"
    path.write_text(other + "\n")
    assert (
        ferry("secrets", "set", "--tenant", tenant, "erp_key", "--from-file", str(path)).code == 0
    )
    assert service(migrated).load(tenant, ["erp_key"]) == {"erp_key": other}
    listing = ferry("secrets", "list", "--tenant", tenant, "--json")
    assert [s["name"] for s in listing.json()["secrets"]] == ["crm_token", "erp_key"]
    assert value not in listing.out and other not in listing.out
    assert ferry("secrets", "delete", "--tenant", tenant, "erp_key").code == 0
    assert ferry("secrets", "delete", "--tenant", tenant, "erp_key").code == 1
    assert [
        s["name"] for s in ferry("secrets", "list", "--tenant", tenant, "--json").json()["secrets"]
    ] == ["crm_token"]


def test_the_value_is_never_taken_as_an_argument(ferry, migrated, tenant, capsys):
    for argv in (
        ["secrets", "set", "--tenant", tenant, "crm_token", "the-value-123"],
        ["secrets", "set", "--tenant", tenant, "crm_token", "--value", "the-value-123"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert service(migrated).list(tenant) == []
    # No option of `set` takes a value but the file's path.
    setter = build_parser()._subparsers._group_actions[0].choices["secrets"]
    set_parser = setter._subparsers._group_actions[0].choices["set"]
    options = {o for a in set_parser._actions for o in a.option_strings}
    assert options == {"-h", "--help", "--tenant", "--from-file"}


def test_a_short_value_or_unknown_tenant_is_one_line_on_stderr(
    ferry, migrated, tenant, monkeypatch
):
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    ran = ferry("secrets", "set", "--tenant", tenant, "crm_token")
    assert (
        ran.code == 1
        and "at least 8 and at most 65536 characters" in ran.err
        and "short" not in ran.err.replace("at least", "")
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("long-enough-value\n"))
    assert ferry("secrets", "set", "--tenant", "nobody", "crm_token").code == 1


def test_webhook_shows_the_tenants_secret_and_rotates_it(ferry, migrated, tenant):
    shown = ferry("secrets", "webhook", "--tenant", tenant)
    secret = shown.out.strip().splitlines()[-1]
    assert shown.code == 0 and secret.startswith("whsec_")
    assert ferry("secrets", "webhook", "--tenant", tenant).out.strip().splitlines()[-1] == secret
    rotated = ferry("secrets", "webhook", "--tenant", tenant, "--rotate")
    lines = rotated.out.strip().splitlines()
    assert lines[-1] != secret and "previous secret signs too until" in lines[0]
    keys = service(migrated).webhook_secret(tenant).signing_keys
    assert keys == (lines[-1].encode(), secret.encode())


def test_rotate_reencrypts_under_the_new_key(ferry, migrated, tenant, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("value-under-the-old-key\n"))
    assert ferry("secrets", "set", "--tenant", tenant, "crm_token").code == 0
    old = Settings.from_env().secret_key
    new = secrets.token_urlsafe(48)
    monkeypatch.setenv("FERRY_SECRET_KEY", new)
    monkeypatch.setenv("FERRY_SECRET_KEY_PREVIOUS", old)
    ran = ferry("secrets", "rotate")
    assert ran.code == 0 and "re-encrypted 1 secrets" in ran.out
    monkeypatch.delenv("FERRY_SECRET_KEY_PREVIOUS")
    assert service(migrated).load(tenant, ["crm_token"]) == {"crm_token": "value-under-the-old-key"}
